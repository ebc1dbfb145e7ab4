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

The queue is of the type production consumers use (``queue_type``), because the broker's cost
per report differs several times between them: ``classic`` (exclusive, auto-deleted: gone
with the connection), ``quorum`` (replicated log; durable by definition) or ``stream``
(append-only log on disk, read with acknowledgements). Quorum queues and streams cannot be
exclusive, so they are named (``streamer.loadtest.<run>.<n>``), deleted when the watcher stops,
and a quorum queue also expires 5 minutes after its last reader is gone (a killed load
generator leaves nothing for long); a stream cannot expire, and keeps at most its capped
size until deleted.

Why not the fedora-messaging-style consumer (aiormq): it parses every frame and property
table and starts a task per delivery, about 50 µs of CPU per report, more than streamer spends
publishing one; on the load generator's own cores that halved the publisher's rate. The watcher
only needs message bodies, so it reads through streamer's receiver (:mod:`streamer.receiver`
on the hand-read AMQP core, no acks, no properties decoded): a few µs per report. The receiver
reconnects by itself, so the watcher outlives a broker restart; what was routed meanwhile counts
as lost.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from typing import Any, Final, Literal

import msgspec
import uvloop

from streamer.amqp import Connection, ConnectionCallbacks, Delivery, Link, open_connection
from streamer.receiver import Receiver
from streamer.settings import Settings, mask_url
from streamer.stats import LatencyHistogram
from streamer.topology import default_queue_arguments

__all__ = ["QUEUE_TYPES", "SeqTracker", "Watcher", "merge_snapshots", "queue_name"]

log = logging.getLogger(__name__)

_MAX_TASKS: Final = 200_000
QueueType = Literal["classic", "quorum", "stream"]
QUEUE_TYPES: Final = ("classic", "quorum", "stream")
_EXPIRES_MS: Final = 300_000  # a named quorum queue without readers goes after 5 minutes
_STREAM_BYTES_PER_REPORT: Final = 1_000  # a stream's cap: max_length reports of ~1 kB


def queue_name(run: str, index: int) -> str:
    """The name of a named watcher or sink queue: ``streamer.loadtest.<run>.<index>``."""
    return f"streamer.loadtest.{run}.{index}"


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


def merge_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Several watchers' :meth:`SeqTracker.snapshot` as one: counts and latency buckets
    summed (exactly: the buckets are the same everywhere), the largest maximum."""
    merged: dict[str, Any] = {
        key: sum(s[key] for s in snapshots)
        for key in ("received", "lost", "out_of_order", "duplicates", "tasks")
    }
    buckets = zip(*(s["latency"] for s in snapshots), strict=True)
    merged["latency"] = [sum(counts) for counts in buckets]
    merged["latency_max"] = max((s["latency_max"] for s in snapshots), default=0.0)
    return merged


class Watcher:
    """Consume ``<prefix>.#`` from ``exchange`` in a background OS thread.

    The receiving is streamer's own (:class:`~streamer.receiver.Receiver`, without acks): it
    reconnects by itself and declares its queue again, so the watcher survives a broker
    restart (reports routed while it was away count as lost).

    Args:
        url: broker URL.
        exchange: the topic exchange the load goes to (declared if missing, as the
            publisher does).
        prefix: the routing prefix (``tasks``).
        max_length: the watcher queue's cap; beyond it the oldest reports are dropped.
        consume: False binds the queue but reads nothing: a sink that makes the broker
            route and enqueue every report, as for a consumer that is not there (the
            throughput benchmark's broker workload).
        queue_type: ``classic``, ``quorum`` or ``stream`` (see the module's docstring).
        name: the queue's name (quorum and stream: default a new
            ``streamer.loadtest.<random>.0``); a classic queue is always the broker's.

    Raises:
        ConfigError: ``url`` is not a broker URL.
        ValueError: an unknown ``queue_type``.
    """

    def __init__(
        self,
        url: str,
        exchange: str,
        *,
        prefix: str = "tasks",
        max_length: int = 50_000,
        consume: bool = True,
        queue_type: QueueType = "classic",
        name: str | None = None,
    ) -> None:
        if queue_type not in QUEUE_TYPES:
            raise ValueError(
                f"unknown queue type {queue_type!r}; expected one of {', '.join(QUEUE_TYPES)}"
            )
        self.queue_type = queue_type
        if queue_type == "classic":
            self.name = ""
        else:
            self.name = name or queue_name(uuid.uuid4().hex[:8], 0)
        self.url = url
        self.exchange = exchange
        self.prefix = prefix
        self.max_length = max_length
        self.consume = consume
        self.settings = Settings(
            url=url, exchange=exchange, routing_prefix=prefix, connection_name="streamer loadtest"
        )
        self.tracker = SeqTracker()
        self.error: BaseException | None = None
        self.last_received = 0.0
        self._lock = _real("_thread", "allocate_lock")()
        self._ready = _real("_thread", "allocate_lock")()
        self._ready.acquire()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._done = _real("_thread", "allocate_lock")()
        self._link: Link | None = None

    @property
    def reconnects(self) -> int:
        """Connections re-established after a loss."""
        return self._link.reconnects if self._link is not None else 0

    def start(self, timeout: float = 10.0) -> None:
        """Start consuming; returns once the queue is bound (or raises why it is not)."""
        self._done.acquire()
        _real("_thread", "start_new_thread")(self._run, ())
        if not self._ready.acquire(timeout=timeout):
            link = self._link
            attempts = link.attempts if link is not None else 0
            why = link.last_error if link is not None else None
            self.stop()
            raise TimeoutError(
                f"the watcher did not bind its queue within {timeout} s "
                f"({attempts} failed attempts to connect to {mask_url(self.url)}"
                + (f"; the last: {why}" if why is not None else "")
                + ")"
            )
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
        if self.consume:
            # The anonymous queue ("" in plan()'s terms: the broker names it), <prefix>.#.
            receiver = Receiver(
                self._on_batch,
                settings=self.settings,
                bindings=[
                    {
                        "exchange": self.exchange,
                        "routing_keys": [f"{self.prefix}.#"],
                        "queue": self.name,
                    }
                ],
                queues={self.name: self._queue()},
                no_ack=self.queue_type != "stream",  # a stream is read with acks
                what="watcher",
            )
            self._link = link = receiver.link
            running = asyncio.ensure_future(receiver.run())
        else:
            # The sink: the same queue, bound but never consumed (a receiver always consumes).
            self._link = link = Link(
                self.settings,
                name=f"{self.settings.client_name} sink",
                callbacks=ConnectionCallbacks(),
                setup=self._bind,
                what="sink",
                fatal=True,
            )
            running = asyncio.ensure_future(_run_link(link, self.settings.close_timeout))
        bound = asyncio.ensure_future(link.connected.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({running, bound, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if bound.done() and not running.done():
                self._ready.release()
                await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link.stop()
            bound.cancel()
            stopping.cancel()
            try:
                await running  # raises why the receiver gave up, if it did
            finally:
                if self.name and link.ever_connected:  # (else it was never declared)
                    await self._delete()

    def _queue(self) -> dict[str, Any]:
        """The watcher's queue, capped at ``max_length`` reports (oldest dropped)."""
        if self.queue_type == "classic":
            return {
                "durable": False,
                "auto_delete": True,
                "exclusive": True,
                "arguments": default_queue_arguments(self.max_length),
            }
        if self.queue_type == "quorum":
            arguments = {
                "x-queue-type": "quorum",
                **default_queue_arguments(self.max_length),
                "x-expires": _EXPIRES_MS,
            }
        else:
            size = self.max_length * _STREAM_BYTES_PER_REPORT
            arguments = {
                "x-queue-type": "stream",
                "x-max-length-bytes": size,
                "x-stream-max-segment-size-bytes": max(size // 10, 1_000_000),
            }
        return {"durable": True, "auto_delete": False, "exclusive": False, "arguments": arguments}

    async def _bind(self, conn: Connection) -> None:
        """The sink's set-up on every connection: the watcher's queue, bound, not consumed."""
        await conn.open_channel(1)
        await conn.declare_exchange(1, self.exchange, confirm=False)
        queue = await conn.declare_queue(1, self.name, **self._queue())
        await conn.bind(1, queue, self.exchange, f"{self.prefix}.#")

    async def _delete(self) -> None:
        """Delete the named queue (the broker keeps a durable one); say so if it cannot."""

        async def delete(conn: Connection) -> None:
            await conn.open_channel(1)
            await conn.delete_queue(1, self.name)

        try:
            conn = await open_connection(
                self.settings.urls[0],
                self.settings,
                name=f"{self.settings.client_name} clean-up",
                callbacks=ConnectionCallbacks(),
                setup=delete,
            )
            await conn.close(self.settings.close_timeout)
        except Exception as exc:
            log.warning(
                "could not delete the %s queue %s (%s): delete it with `rabbitmqctl "
                "delete_queue %s`",
                self.queue_type,
                self.name,
                exc,
                self.name,
            )

    def _on_batch(self, deliveries: list[Delivery]) -> None:
        now = time.time()
        with self._lock:
            observe = self.tracker.observe
            for _, _, _, body in deliveries:
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


async def _run_link(link: Link, close_timeout: float) -> None:
    """Keep ``link`` connected until it is stopped; then close its connection politely."""
    try:
        await link.run()
    finally:
        await link.close(close_timeout)
