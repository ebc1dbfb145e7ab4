"""The watcher: what consumers actually receive, measured in the same run as the load.

It binds its own queue to ``<prefix>.#`` on the load's exchange and reads every report's
``task_id``, ``seq``, ``state`` and ``sent_at`` (nothing else is decoded: it has to keep up
with the load). Per task it counts what arrived, the sequence numbers never seen (lost: a gap
in ``seq``), reports that arrived after a later one of their task (out of order) and the same
``seq`` again (duplicates, e.g. the re-send after a reconnect), and the end-to-end latency
``sent_at`` → received. Lost reports include those the publisher itself coalesced or dropped
(they got a ``seq`` too): compare with the publisher's accounting. A task whose last reports
were lost shows no gap for them.

Like the background publisher, it runs an asyncio loop in a real OS thread (gevent would
otherwise turn it into a greenlet that starves or is starved by the locust users). Its queue
is capped (drop-head): if the watcher falls behind, the broker drops its oldest reports and
those count as lost here.

Why not aiormq, as streamer's consumers use: it parses every frame and property table and
starts a task per delivery, about 50 µs of CPU per report, more than streamer spends publishing
one; on the load generator's own cores that halved the publisher's rate. The watcher only needs
message bodies, so after a pamqp handshake it reads frames itself (auto-ack, no properties
decoded): a few µs per report.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import msgspec
import uvloop
from pamqp import commands, frame
from pamqp.header import ProtocolHeader

from streamer.stats import LatencyHistogram

__all__ = ["SeqTracker", "Watcher"]

_MAX_TASKS: Final = 200_000


class _Seen(msgspec.Struct):
    """The few fields of a report the watcher needs (msgspec skips the rest)."""

    task_id: str
    state: str = ""
    seq: int = 0
    sent_at: float = 0.0


_decode: Final = msgspec.json.Decoder(_Seen).decode


def _real(module: str, name: str) -> Any:
    """``module.name`` as it was before gevent monkey-patched it (or as it is)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched(module):
        return monkey.get_original(module, name)
    return getattr(__import__(module), name)


class SeqTracker:
    """Per-task sequence bookkeeping and end-to-end latency; plain Python, no I/O.

    Per task: ``[last seq, received, lost, out of order, duplicates, max e2e s, state]``.
    """

    def __init__(self, max_tasks: int = _MAX_TASKS) -> None:
        self.tasks: dict[str, list[Any]] = {}
        self.max_tasks = max_tasks
        self.received = 0
        self.lost = 0
        self.out_of_order = 0
        self.duplicates = 0
        self.latency = LatencyHistogram()
        self.evicted = 0

    def observe(self, task_id: str, seq: int, state: str, latency: float) -> None:
        self.received += 1
        if latency > 0:
            self.latency.observe(latency)
        task = self.tasks.get(task_id)
        if task is None:
            if len(self.tasks) >= self.max_tasks:
                del self.tasks[next(iter(self.tasks))]
                self.evicted += 1
            # Joined late, or its first reports were lost: those count as lost.
            lost = max(seq - 1, 0)
            self.tasks[task_id] = [seq, 1, lost, 0, 0, latency, state]
            self.lost += lost
            return
        task[1] += 1
        if latency > task[5]:
            task[5] = latency
        last = task[0]
        if seq == last:
            task[4] += 1
            self.duplicates += 1
        elif seq < last:
            task[3] += 1
            self.out_of_order += 1
            if task[2]:  # it was counted lost when the later one arrived
                task[2] -= 1
                self.lost -= 1
        else:
            gap = seq - last - 1
            task[0], task[6] = seq, state
            if gap:
                task[2] += gap
                self.lost += gap

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "lost": self.lost,
            "out_of_order": self.out_of_order,
            "duplicates": self.duplicates,
            "tasks": len(self.tasks),
            "latency": list(self.latency.counts),
            "latency_max": self.latency.max,
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per task still tracked, in first-seen order."""
        return [
            {
                "task_id": task_id,
                "state": t[6],
                "last_seq": t[0],
                "received": t[1],
                "lost": t[2],
                "out_of_order": t[3],
                "duplicates": t[4],
                "e2e_max_ms": round(t[5] * 1e3, 3),
            }
            for task_id, t in list(self.tasks.items())
        ]


_DELIVER: Final = b"\x00\x3c\x00\x3c"  # method frame payload start: Basic.Deliver


class _Consumer(asyncio.Protocol):
    """A bare AMQP 0-9-1 consumer: pamqp for the handshake, then deliveries read by hand.

    ``on_bodies`` gets the bodies of every complete message of one read, in order.
    """

    def __init__(self, on_bodies: Callable[[list[bytes]], None]) -> None:
        self.on_bodies = on_bodies
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.rpc: asyncio.Queue[Any] = asyncio.Queue()
        self.consuming = False
        self._size = 0  # body size of the message being read
        self._parts: list[bytes] = []
        self._got = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.rpc.put_nowait(ConnectionError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, end_of_data = 0, len(buf)
        bodies: list[bytes] = []
        while end_of_data - pos >= 8:
            kind = buf[pos]
            size = int.from_bytes(buf[pos + 3 : pos + 7], "big")
            end = pos + 8 + size
            if end > end_of_data:
                break
            if self.consuming and kind == 3:  # body
                self._parts.append(bytes(buf[pos + 7 : end - 1]))
                self._got += size
                if self._got >= self._size:
                    bodies.append(b"".join(self._parts))
                    self._parts, self._got = [], 0
            elif self.consuming and kind == 2:  # content header: class, weight, body size
                self._size = int.from_bytes(buf[pos + 11 : pos + 19], "big")
                if not self._size:
                    bodies.append(b"")
            elif kind == 1 and not (self.consuming and buf[pos + 7 : pos + 11] == _DELIVER):
                self.rpc.put_nowait(frame.unmarshal(bytes(buf[pos:end]))[2])
            pos = end  # heartbeats (kind 8) and deliveries need nothing more
        del buf[:pos]
        if bodies:
            self.on_bodies(bodies)

    def send(self, value: Any, channel: int = 0) -> None:
        assert self.transport is not None
        self.transport.write(frame.marshal(value, channel))

    async def expect(self, kind: type) -> Any:
        value = await asyncio.wait_for(self.rpc.get(), 10)
        if isinstance(value, Exception):
            raise value
        if not isinstance(value, kind):
            raise ConnectionError(f"expected {kind.__name__}, got {value!r}")
        return value


class Watcher:
    """Consume ``<prefix>.#`` from ``exchange`` in a background OS thread.

    Args:
        url: broker URL.
        exchange: the topic exchange the load goes to (declared if missing, as the
            publisher does).
        prefix: the routing prefix (``tasks``).
        max_length: the watcher queue's cap; beyond it the oldest reports are dropped.
        consume: False binds the queue but reads nothing: a sink that makes the broker
            route and enqueue every report, as for a consumer that is not there (the
            throughput benchmark's broker workload).
    """

    def __init__(
        self,
        url: str,
        exchange: str,
        *,
        prefix: str = "tasks",
        max_length: int = 50_000,
        consume: bool = True,
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.prefix = prefix
        self.max_length = max_length
        self.consume = consume
        self.tracker = SeqTracker()
        self.error: BaseException | None = None
        self.last_received = 0.0
        self._lock = _real("_thread", "allocate_lock")()
        self._ready = _real("_thread", "allocate_lock")()
        self._ready.acquire()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._done = _real("_thread", "allocate_lock")()
        self._queue = ""

    def start(self, timeout: float = 10.0) -> None:
        """Start consuming; returns once the queue is bound (or raises why it is not)."""
        self._done.acquire()
        _real("_thread", "start_new_thread")(self._run, ())
        if not self._ready.acquire(timeout=timeout):
            raise TimeoutError(f"the watcher did not bind its queue within {timeout} s")
        if self.error is not None:
            raise RuntimeError(f"the watcher could not start: {self.error!r}") from self.error

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self.error = exc
        finally:
            loop.close()
            self._loop = None
            if self._ready.locked():
                self._ready.release()
            self._done.release()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        parts = urlsplit(self.url)
        tls = ssl.create_default_context() if parts.scheme == "amqps" else None
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Consumer(self._on_bodies),
                parts.hostname or "127.0.0.1",
                parts.port or (5671 if tls else 5672),
                ssl=tls,
            ),
            10,
        )
        assert isinstance(proto, _Consumer)
        try:
            await self._handshake(proto, parts)
            self._ready.release()
            stop = asyncio.ensure_future(self._stop.wait())
            failed = asyncio.ensure_future(proto.rpc.get())  # only a close or a lost link
            await asyncio.wait({stop, failed}, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                why = failed.result()
                raise why if isinstance(why, Exception) else ConnectionError(f"closed: {why!r}")
            failed.cancel()
            proto.send(commands.Connection.Close(200, "bye", 0, 0))
            await proto.expect(commands.Connection.CloseOk)
        finally:
            assert proto.transport is not None
            proto.transport.close()

    async def _handshake(self, proto: _Consumer, parts: Any) -> None:
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        proto.send(ProtocolHeader())
        await proto.expect(commands.Connection.Start)
        proto.send(
            commands.Connection.StartOk(
                client_properties={"product": "streamer loadtest", "connection_name": "watcher"},
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            )
        )
        tune = await proto.expect(commands.Connection.Tune)
        proto.send(commands.Connection.TuneOk(tune.channel_max, tune.frame_max, heartbeat=0))
        proto.send(commands.Connection.Open(virtual_host=vhost))
        await proto.expect(commands.Connection.OpenOk)
        proto.send(commands.Channel.Open(), 1)
        await proto.expect(commands.Channel.OpenOk)
        proto.send(
            commands.Exchange.Declare(exchange=self.exchange, exchange_type="topic", durable=True),
            1,
        )
        await proto.expect(commands.Exchange.DeclareOk)
        arguments = {"x-max-length": self.max_length, "x-overflow": "drop-head"}
        proto.send(commands.Queue.Declare(exclusive=True, auto_delete=True, arguments=arguments), 1)
        self._queue = (await proto.expect(commands.Queue.DeclareOk)).queue
        key = f"{self.prefix}.#"
        proto.send(
            commands.Queue.Bind(queue=self._queue, exchange=self.exchange, routing_key=key), 1
        )
        await proto.expect(commands.Queue.BindOk)
        if self.consume:
            proto.consuming = True
            proto.send(commands.Basic.Consume(queue=self._queue, no_ack=True), 1)
            await proto.expect(commands.Basic.ConsumeOk)

    def _on_bodies(self, bodies: list[bytes]) -> None:
        now = time.time()
        with self._lock:
            observe = self.tracker.observe
            for body in bodies:
                try:
                    seen = _decode(body)
                except msgspec.DecodeError:
                    continue  # not a report (another publisher on the exchange)
                observe(
                    seen.task_id, seen.seq, seen.state, now - seen.sent_at if seen.sent_at else 0.0
                )
        self.last_received = now

    def settle(self, quiet: float = 0.5, timeout: float = 10.0) -> None:
        """Wait (blocking) until nothing arrived for ``quiet`` seconds, at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if time.time() - self.last_received >= quiet:
                return
            time.sleep(0.1)

    def reset(self) -> None:
        """Forget what was seen (a new test starts)."""
        with self._lock:
            self.tracker = SeqTracker()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.tracker.snapshot()

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.tracker.rows()

    def stop(self, timeout: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                return
            if self._done.acquire(timeout=timeout):
                self._done.release()
