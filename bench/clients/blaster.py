"""The reference ceiling, not a product: a bare asyncio.Protocol that writes pre-encoded
publish frames in batches, to show roughly the rate the broker allows on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from ._common import (
    CONTENT_TYPE,
    TRANSIENT,
    Latencies,
    Message,
    Meter,
    RunOptions,
    _run_async,
    summarize,
)


class _BlasterProtocol(asyncio.Protocol):
    """Bare AMQP publisher: pamqp for the handshake, pre-encoded publish batches after.

    Confirms are settled by delivery tag, honouring ``multiple=True``. Latency
    is per batch: every message of a batch is stamped with the batch's write
    time and recorded as one weighted sample per (batch, ack) pair.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.rpc: asyncio.Queue[Any] = asyncio.Queue()  # non-confirm frames, or an exception
        self.blocked = self.paused = False
        # publish phase state, set by start_publishing()
        self.chunks: list[bytes] = []
        self.chunk_sizes: list[int] = []
        self.sent_at: list[float] = []
        self.window = self.batch = self.total = 0
        self.next_chunk = self.sent = self.settled = self.acked = self.nacked = 0
        self.floor = 0  # every tag <= floor is settled
        self.loose: set[int] = set()  # tags > floor settled one by one
        self.lat = Latencies()
        self.done: asyncio.Future[None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, hence the cast.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection lost: {exc!r}"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()

    def data_received(self, data: bytes) -> None:
        from pamqp import commands, frame

        self.buf += data
        while len(self.buf) >= 8:
            (size,) = struct.unpack_from(">I", self.buf, 3)
            end = 8 + size
            if len(self.buf) < end:
                return
            _, _channel, value = frame.unmarshal(bytes(self.buf[:end]))
            del self.buf[:end]
            if isinstance(value, commands.Basic.Ack):
                self.settle(value.delivery_tag, value.multiple, nack=False)
            elif isinstance(value, commands.Basic.Nack):
                self.settle(value.delivery_tag, value.multiple, nack=True)
            elif isinstance(value, commands.Connection.Blocked):
                self.blocked = True
            elif isinstance(value, commands.Connection.Unblocked):
                self.blocked = False
                self.pump()
            elif isinstance(value, (commands.Connection.Close, commands.Channel.Close)):
                self._fail(ConnectionError(f"closed by broker: {value!r}"))
            else:
                self.rpc.put_nowait(value)

    # -- handshake helpers
    def send(self, value: Any, channel: int = 0) -> None:
        from pamqp import frame

        assert self.transport is not None
        self.transport.write(frame.marshal(value, channel))

    async def expect(self, kind: type) -> Any:
        value = await asyncio.wait_for(self.rpc.get(), 10)
        if isinstance(value, Exception):
            raise value
        if not isinstance(value, kind):
            raise ConnectionError(f"expected {kind.__name__}, got {value!r}")
        return value

    def _fail(self, exc: Exception) -> None:
        """Wake whoever waits: the publish phase, or a handshake step."""
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)
        self.rpc.put_nowait(exc)

    # -- publish phase
    def start_publishing(
        self, chunks: list[bytes], sizes: list[int], window: int, batch: int
    ) -> asyncio.Future[None]:
        self.chunks, self.chunk_sizes = chunks, sizes
        self.sent_at = [0.0] * len(chunks)
        self.window, self.batch = window, batch
        self.total = sum(sizes)
        self.done = asyncio.get_running_loop().create_future()
        if self.total == 0:
            self.done.set_result(None)
        self.pump()
        return self.done

    def pump(self) -> None:
        """Write whole batches while the unconfirmed count stays within the window."""
        if self.transport is None or self.done is None:
            return
        write, perf = self.transport.write, time.perf_counter
        chunks, sizes, n = self.chunks, self.chunk_sizes, len(self.chunks)
        while self.next_chunk < n and not (self.paused or self.blocked):
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
    from pamqp import commands
    from pamqp.header import ProtocolHeader

    parts = urlsplit(url)
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(
            _BlasterProtocol, parts.hostname or "127.0.0.1", parts.port or 5672
        )
        assert isinstance(proto, _BlasterProtocol)
        proto.send(ProtocolHeader())
        await proto.expect(commands.Connection.Start)
        proto.send(
            commands.Connection.StartOk(
                client_properties={
                    "product": "throughput-blaster",
                    "capabilities": {"publisher_confirms": True, "basic.nack": True},
                },
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            )
        )
        tune = await proto.expect(commands.Connection.Tune)
        frame_max = tune.frame_max or 131_072
        proto.send(commands.Connection.TuneOk(tune.channel_max, frame_max, heartbeat=0))
        proto.send(commands.Connection.Open(virtual_host=vhost))
        await proto.expect(commands.Connection.OpenOk)
        proto.send(commands.Channel.Open(), 1)
        await proto.expect(commands.Channel.OpenOk)
        proto.send(commands.Confirm.Select(), 1)
        await proto.expect(commands.Confirm.SelectOk)

        chunks, sizes = _encode_publishes(exchange, messages, opts.batch, frame_max)
        meter = Meter(opts.broker_pid)
        error = None
        meter.start()
        try:
            await proto.start_publishing(chunks, sizes, opts.window, opts.batch)
        except ConnectionError as exc:
            error = str(exc)
        meter.stop()

        if error is None:
            proto.send(commands.Connection.Close(200, "bye", class_id=0, method_id=0))
            with contextlib.suppress(ConnectionError, TimeoutError):
                await proto.expect(commands.Connection.CloseOk)
        assert proto.transport is not None
        proto.transport.close()
        return summarize(
            meter,
            confirmed=proto.acked,
            attempted=proto.sent,
            planned=len(messages),
            nacked=proto.nacked,
            latencies=proto.lat,
            latency_basis="per-batch",
            error=error,
            errors=int(error is not None),
        )

    return _run_async(main())
