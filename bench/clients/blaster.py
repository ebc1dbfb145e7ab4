"""The reference ceiling, not a product: pre-encoded publish frames written in batches on
streamer's bare AMQP connection, to show roughly the rate the broker allows on this machine.

A bare client: no Publisher, no buffer, no per-report encoding; only the core's connection
(:mod:`streamer.amqp`: log-in, channel, confirm mode) and its hand-read confirms.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._common import (
    CONTENT_TYPE,
    REPO_ROOT,
    TRANSIENT,
    Latencies,
    Message,
    Meter,
    RunOptions,
    Unavailable,
    _run_async,
    summarize,
)

if TYPE_CHECKING:
    from streamer.amqp import Connection

_CHANNEL = 1


class _Blaster:
    """The publish phase: pre-encoded batches within a window of unconfirmed publishes.

    Confirms are settled by delivery tag, honouring ``multiple=True``. Latency
    is per batch: every message of a batch is stamped with the batch's write
    time and recorded as one weighted sample per (batch, ack) pair.
    """

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.error: Exception | None = None
        self.chunks: list[bytes] = []
        self.chunk_sizes: list[int] = []
        self.sent_at: list[float] = []
        self.window = self.batch = self.total = 0
        self.next_chunk = self.sent = self.settled = self.acked = self.nacked = 0
        self.floor = 0  # every tag <= floor is settled
        self.loose: set[int] = set()  # tags > floor settled one by one
        self.lat = Latencies()
        self.done: asyncio.Future[None] | None = None

    def fail(self, exc: Exception) -> None:
        """The connection is gone: end the publish phase with ``exc``."""
        self.error = exc
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    def start_publishing(
        self, chunks: list[bytes], sizes: list[int], window: int, batch: int
    ) -> asyncio.Future[None]:
        self.chunks, self.chunk_sizes = chunks, sizes
        self.sent_at = [0.0] * len(chunks)
        self.window, self.batch = window, batch
        self.total = sum(sizes)
        self.done = asyncio.get_running_loop().create_future()
        if self.error is not None:
            self.done.set_exception(self.error)
        elif self.total == 0:
            self.done.set_result(None)
        self.pump()
        return self.done

    def pump(self) -> None:
        """Write whole batches while the unconfirmed count stays within the window."""
        conn = self.conn
        if conn is None or self.done is None:
            return
        write, perf = conn.write, time.perf_counter
        chunks, sizes, n = self.chunks, self.chunk_sizes, len(self.chunks)
        while self.next_chunk < n and conn.writable and not conn.blocked:
            size = sizes[self.next_chunk]
            if self.sent - self.settled + size > self.window:
                break
            self.sent_at[self.next_chunk] = perf()
            write(chunks[self.next_chunk])
            self.sent += size
            self.next_chunk += 1

    def settle(self, tag: int, multiple: bool, *, nack: bool) -> None:
        now = time.perf_counter()
        if multiple:
            lo, hi = self.floor + 1, tag
            if hi < lo:
                return
            loose_here = [t for t in self.loose if t <= hi] if self.loose else []
            for t in loose_here:
                self.loose.discard(t)
            count = hi - lo + 1 - len(loose_here)
            self._record(lo, hi, now, loose_here)
            self.floor = hi
        else:
            if tag <= self.floor or tag in self.loose:
                return
            self.loose.add(tag)
            count = 1
            self._record(tag, tag, now, [])
            while self.floor + 1 in self.loose:
                self.floor += 1
                self.loose.discard(self.floor)
        self.settled += count
        if nack:
            self.nacked += count
        else:
            self.acked += count
        if self.done is not None and self.settled >= self.total and not self.done.done():
            self.done.set_result(None)
            return
        self.pump()

    def _record(self, lo: int, hi: int, now: float, skip: list[int]) -> None:
        """One weighted latency sample per batch touched by tags lo..hi."""
        b = self.batch
        first, last = (lo - 1) // b, (hi - 1) // b
        for i in range(first, last + 1):
            a, z = max(lo, i * b + 1), min(hi, (i + 1) * b)
            weight = z - a + 1 - sum(1 for t in skip if a <= t <= z)
            if weight > 0:
                self.lat.add(now - self.sent_at[i], weight)


def _encode_publishes(
    exchange: str, messages: Sequence[Message], batch: int, frame_max: int
) -> tuple[list[bytes], list[int]]:
    """Pre-encode method + header + body frames, joined ``batch`` messages per chunk."""
    from pamqp import commands, frame
    from pamqp.header import ContentHeader

    props = commands.Basic.Properties(content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)
    method_by_rk: dict[str, bytes] = {}
    header_by_size: dict[int, bytes] = {}
    max_body = frame_max - 8
    chunks: list[bytes] = []
    sizes: list[int] = []
    parts: list[bytes] = []
    for i, (rk, body) in enumerate(messages):
        method = method_by_rk.get(rk)
        if method is None:
            method = frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=rk), 1)
            method_by_rk[rk] = method
        header = header_by_size.get(len(body))
        if header is None:
            header = frame.marshal(ContentHeader(body_size=len(body), properties=props), 1)
            header_by_size[len(body)] = header
        parts += (method, header)
        for off in range(0, len(body), max_body):
            piece = body[off : off + max_body]
            parts += (struct.pack(">BHI", 3, 1, len(piece)), piece, b"\xce")
        if (i + 1) % batch == 0 or i + 1 == len(messages):
            chunks.append(b"".join(parts))
            sizes.append((i % batch) + 1)
            parts = []
    return chunks, sizes


def run_blaster(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """Reference ceiling: pre-encoded publishes, ``batch`` per write, ``window`` unconfirmed."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from streamer.amqp import ConnectionCallbacks, open_connection
        from streamer.settings import Settings
    except ImportError as exc:
        raise Unavailable(f"import failed: {exc!r}") from exc

    blaster = _Blaster()

    class Confirms(ConnectionCallbacks):
        """The connection's events, handed to the blaster."""

        def on_confirm(self, channel: int, tag: int, multiple: bool, ok: bool) -> None:
            blaster.settle(tag, multiple, nack=not ok)

        def on_blocked(self, blocked: bool) -> None:
            blaster.pump()

        def on_writable(self) -> None:
            blaster.pump()

        def on_lost(self, exc: BaseException | None) -> None:
            blaster.fail(ConnectionError(f"connection lost: {exc!r}"))

    async def setup(conn: Connection) -> None:
        await conn.open_channel(_CHANNEL, confirm=True)
        await conn.declare_exchange(_CHANNEL, exchange, confirm=True)

    async def main() -> dict[str, Any]:
        settings = Settings(url=url, exchange=exchange, connection_name="throughput-blaster")
        conn = await open_connection(
            url, settings, name=settings.client_name, callbacks=Confirms(), setup=setup, heartbeat=0
        )
        blaster.conn = conn
        chunks, sizes = _encode_publishes(exchange, messages, opts.batch, conn.frame_max)
        meter = Meter(opts.broker_pid)
        error = None
        meter.start()
        try:
            await blaster.start_publishing(chunks, sizes, opts.window, opts.batch)
        except ConnectionError as exc:
            error = str(exc)
        meter.stop()
        await conn.close()  # politely, unless the connection is gone already
        return summarize(
            meter,
            confirmed=blaster.acked,
            attempted=blaster.sent,
            planned=len(messages),
            nacked=blaster.nacked,
            latencies=blaster.lat,
            latency_basis="per-batch",
            error=error,
            errors=int(error is not None),
        )

    return _run_async(main())
