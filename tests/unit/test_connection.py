"""The hand-written delivery reader must read what a broker sends, however the reads split it.

The receiver's frame reader takes deliveries (method, content header, body frames) straight
from the socket's reads, with a fast path for a delivery whose three frames arrive in one
read. Here the broker's side is written with pamqp (a generic AMQP implementation), cut into
reads at arbitrary points, and what the reader hands over must be every delivery, in order,
with its tag, routing key, content type and body exactly.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, frame, heartbeat
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from streamer.amqp import Connection, ConnectionCallbacks, Delivery
from streamer.amqp.connection import _FRAME_MAX, _Incoming

CHANNEL = 1
BODY_FRAME = _FRAME_MAX - 8  # largest body per frame, as the broker splits them


def broker_bytes(deliveries: list[Delivery], beats: list[bool]) -> bytes:
    """What a broker writes for these deliveries, with a heartbeat after some of them."""
    out = bytearray()
    for (tag, key, content_type, body), beat in zip(deliveries, beats, strict=True):
        out += frame.marshal(commands.Basic.Deliver("ctag-1", tag, False, "streamer", key), CHANNEL)
        props = commands.Basic.Properties(content_type=content_type or None, delivery_mode=1)
        out += frame.marshal(ContentHeader(0, len(body), props), CHANNEL)
        for at in range(0, len(body), BODY_FRAME):
            out += frame.marshal(ContentBody(body[at : at + BODY_FRAME]), CHANNEL)
        if beat:
            out += frame.marshal(heartbeat.Heartbeat(), 0)
    return bytes(out)


def read(data: bytes, cuts: list[int]) -> list[Delivery]:
    """Feed ``data`` to a consuming connection in reads split at ``cuts``."""
    got: list[Delivery] = []

    class Keep(ConnectionCallbacks):
        def on_deliveries(self, channel: int, deliveries: list[Delivery]) -> None:
            assert channel == CHANNEL
            got.extend(deliveries)

    async def run() -> None:
        conn = Connection("amqp://test/", "test", 0, Keep())
        conn._incoming[CHANNEL] = _Incoming(CHANNEL)  # as after consume()
        at = 0
        for cut in [*sorted(set(cuts)), len(data)]:
            if cut > at:
                conn.data_received(data[at:cut])
                at = cut

    asyncio.run(run())
    return got


deliveries = st.lists(
    st.tuples(
        st.integers(1, 2**63 - 1),  # pamqp writes the tag signed
        st.text(max_size=40).map(lambda s: f"tasks.{s}"),
        st.sampled_from(["", "application/json", "text/plain; charset=latin-1"]),
        st.one_of(
            st.binary(max_size=300),  # the usual: one body frame, or none when empty
            st.integers(BODY_FRAME - 2, 2 * BODY_FRAME + 3).map(lambda n: b"x" * n),
        ),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(deliveries, st.data())
def test_every_delivery_is_read_whatever_the_reads(
    expected: list[Delivery], data: st.DataObject
) -> None:
    beats = data.draw(st.lists(st.booleans(), min_size=len(expected), max_size=len(expected)))
    raw = broker_bytes(expected, beats)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20))
    assert read(raw, cuts) == expected


def test_one_read_and_byte_by_byte_agree() -> None:
    expected: list[Delivery] = [
        (1, "tasks.a", "application/json", b'{"task_id":"a"}'),
        (2, "tasks.é", "", b""),
        (3, "tasks.b", "", b"y" * (BODY_FRAME + 1)),
        (4, "tasks.c", "application/json", b"{}"),
    ]
    raw = broker_bytes(expected, [False, True, False, True])
    assert read(raw, []) == expected
    assert read(raw, list(range(len(raw)))) == expected


# -- a stream queue's deliveries: each carries its offset in an x-stream-offset header ------

header_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
    st.dictionaries(st.text("abc", max_size=5), st.integers(0, 10), max_size=3),
)
other_headers = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12), header_values, max_size=4
)


def stream_bytes(
    deliveries: list[Delivery], offsets: list[int], headers: list[dict[str, object]]
) -> bytes:
    """A stream's deliveries as the broker writes them: its offset among other headers."""
    out = bytearray()
    for (tag, key, content_type, body), offset, extra in zip(
        deliveries, offsets, headers, strict=True
    ):
        out += frame.marshal(commands.Basic.Deliver("ctag-1", tag, False, "", key), CHANNEL)
        table = {**extra, "x-stream-offset": offset}
        props = commands.Basic.Properties(
            content_type=content_type or None,
            content_encoding="gzip" if offset % 2 else None,
            headers=table,
        )
        out += frame.marshal(ContentHeader(0, len(body), props), CHANNEL)
        for at in range(0, len(body), BODY_FRAME):
            out += frame.marshal(ContentBody(body[at : at + BODY_FRAME]), CHANNEL)
    return bytes(out)


def read_stream(data: bytes, cuts: list[int]) -> list[tuple[list[Delivery], int]]:
    """Each batch handed over, with the stream offset the connection reports after it."""
    got: list[tuple[list[Delivery], int]] = []
    conn: Connection | None = None

    class Keep(ConnectionCallbacks):
        def on_deliveries(self, channel: int, deliveries: list[Delivery]) -> None:
            assert conn is not None
            got.append((deliveries, conn.stream_offset(channel)))

    async def run() -> None:
        nonlocal conn
        conn = Connection("amqp://test/", "test", 0, Keep())
        conn._incoming[CHANNEL] = _Incoming(CHANNEL, stream=True)  # consume(x-stream-offset)
        at = 0
        for cut in [*sorted(set(cuts)), len(data)]:
            if cut > at:
                conn.data_received(data[at:cut])
                at = cut

    asyncio.run(run())
    return got


@settings(max_examples=200, deadline=None)
@given(deliveries, st.data())
def test_stream_offsets_are_read_whatever_the_headers_and_reads(
    expected: list[Delivery], data: st.DataObject
) -> None:
    n = len(expected)
    start = data.draw(st.integers(0, 2**40))
    offsets = list(range(start, start + n))
    headers = data.draw(st.lists(other_headers, min_size=n, max_size=n))
    raw = stream_bytes(expected, offsets, headers)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20))
    batches = read_stream(raw, cuts)
    assert [d for batch, _ in batches for d in batch] == expected
    handed = 0
    for batch, offset in batches:
        handed += len(batch)
        assert offset == offsets[handed - 1]  # the offset of the last one handed over


def test_a_queue_that_is_not_a_stream_reports_no_offset() -> None:
    raw = broker_bytes([(1, "tasks.a", "", b"{}")], [False])
    assert read(raw, []) == [(1, "tasks.a", "", b"{}")]
    conn = asyncio.run(_idle_connection())
    assert conn.stream_offset(CHANNEL) == -1


async def _idle_connection() -> Connection:
    return Connection("amqp://test/", "test", 0, ConnectionCallbacks())
