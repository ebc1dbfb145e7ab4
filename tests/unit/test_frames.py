"""Hand-built publish frames must be exactly what a generic AMQP parser expects."""

from __future__ import annotations

from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from streamer.frames import Framer


def parse(data: bytes) -> list[tuple[int, object]]:
    out = []
    while data:
        used, channel, value = frame.unmarshal(data)
        out.append((channel, value))
        data = data[used:]
    return out


def test_publish_frames_parse() -> None:
    framer = Framer(
        exchange="ex",
        app_id="app",
        fingerprint={"host": "h", "pid": 7},
        mandatory=True,
        headers=True,
    )
    task = framer.task(3, "tasks.t1", "t1")
    parts: list[bytes] = []
    framer.message(parts, 3, task, "finished", 42, b"id-1", 1_700_000_000, b'{"a":1}')
    (ch1, pub), (ch2, head), (ch3, body) = parse(b"".join(parts))
    assert ch1 == ch2 == ch3 == 3
    assert isinstance(pub, commands.Basic.Publish)
    assert (pub.exchange, pub.routing_key, pub.mandatory) == ("ex", "tasks.t1", True)
    assert isinstance(head, ContentHeader) and head.body_size == 7
    props = head.properties
    assert props.content_type == "application/json"
    assert props.delivery_mode == 1
    assert props.message_id == "id-1" and props.app_id == "app"
    assert props.correlation_id == "t1" and props.message_type == "finished"
    assert props.timestamp.timestamp() == 1_700_000_000
    assert props.headers == {"task_id": "t1", "state": "finished", "seq": 42, "host": "h", "pid": 7}
    assert isinstance(body, ContentBody) and body.value == b'{"a":1}'


def test_large_body_is_split_at_frame_max() -> None:
    framer = Framer(exchange="ex", app_id="a", fingerprint={}, frame_max=4096)
    task = framer.task(1, "tasks.t", "t")
    parts: list[bytes] = []
    body = bytes(range(256)) * 40  # 10,240 bytes
    framer.message(parts, 1, task, "running", 1, b"i", 0, body)
    frames = parse(b"".join(parts))
    bodies = [v for _, v in frames[2:]]
    assert all(isinstance(b, ContentBody) for b in bodies)
    assert [len(b.value) for b in bodies] == [4088, 4088, 2064]
    assert b"".join(b.value for b in bodies) == body


def test_without_headers() -> None:
    framer = Framer(exchange="ex", app_id="app", fingerprint={"pid": 1}, headers=False)
    parts: list[bytes] = []
    framer.message(parts, 1, framer.task(1, "tasks.t", "t"), "error", 3, b"m", 5, b"{}")
    (_, _), (_, head), (_, body) = parse(b"".join(parts))
    assert isinstance(head, ContentHeader)
    props = head.properties
    assert props.headers is None
    assert props.message_id == "m" and props.delivery_mode == 1
    assert (props.correlation_id, props.message_type, props.app_id) == ("t", "error", "app")
    assert props.content_type == "application/json" and props.timestamp.timestamp() == 5
    assert isinstance(body, ContentBody) and body.value == b"{}"


def test_every_state_and_long_ids() -> None:
    framer = Framer(
        exchange="e" * 200, app_id="a" * 100, fingerprint={"host": "h" * 300}, headers=True
    )
    for state in (
        "waiting",
        "accepted",
        "running",
        "suspended",
        "skipped",
        "finished",
        "error",
        "canceled",
    ):
        parts: list[bytes] = []
        task = framer.task(65535, "tasks." + "t" * 249, "t" * 249)
        framer.message(parts, 65535, task, state, 2**62, b"x" * 255, 2**40, b"b" * 100)
        _, (_, head), _ = parse(b"".join(parts))
        assert isinstance(head, ContentHeader)
        assert head.properties.headers["state"] == state
        assert head.properties.headers["seq"] == 2**62
        assert head.properties.message_type == state


def test_header_table_length_is_exact() -> None:
    """The table's declared length must match its bytes (the broker is stricter than pamqp)."""
    from pamqp import decode

    framer = Framer(exchange="ex", app_id="a", fingerprint={"host": "h", "pid": 7}, headers=True)
    parts: list[bytes] = []
    framer.message(parts, 1, framer.task(1, "tasks.t", "t"), "running", 9, b"m", 0, b"{}")
    raw = b"".join(parts)
    start = len(parts[0]) + 7 + 14  # method frame, header frame header, content header
    offset = start + 1 + raw[start]  # past the content_type shortstr
    declared = int.from_bytes(raw[offset : offset + 4], "big")
    used, table = decode.field_table(raw[offset:])
    assert used == 4 + declared
    assert table == {"task_id": "t", "state": "running", "seq": 9, "host": "h", "pid": 7}
    assert raw[offset + used] == 1  # delivery_mode follows the table directly
