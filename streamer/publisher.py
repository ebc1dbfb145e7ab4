"""The asyncio publisher: ``publish()`` returns in microseconds, whatever the broker does.

``publish`` validates, stamps (``seq``, ``sent_at``), encodes and puts the report in a
bounded per-channel buffer, then schedules one write for the whole batch on the next loop
iteration. The writer turns waiting reports into frames and writes each connection's share in
one ``transport.write``, as far as every channel's confirm window allows. Confirms settle the
accounting; anything that cannot be delivered is dropped and counted, never kept for later.

One class over 500 lines on purpose: ``publish``, the writer and the confirm handler share the
per-task and per-channel state of the hot path, and splitting them would put an attribute
lookup through another object on every report.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import secrets
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from .buffer import Buffer, Put
from .frames import Framer, TaskFrames
from .front import Front
from .handoff import Handoff
from .pool import Channel, ConnectionPool, PoolOwner
from .report import TERMINAL_STATES, Report, check, due_start, encode_stamped
from .routing import routing_key
from .settings import mask_url
from .stats import DROP_REASONS, LatencyHistogram, Stats
from .task import fingerprint

if TYPE_CHECKING:
    from .metrics import MetricsServer

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

_time: Final = time.time


class PublisherState(enum.Enum):
    INIT = "init"
    STARTING = "starting"  # the very first connection is being made: reports wait
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class _Task:
    """What the publisher remembers of one task: its sequence and its latest report."""

    __slots__ = ("channel", "frames", "id", "latest", "listed", "seq")

    def __init__(self, task_id: str, channel: int, frames: TaskFrames) -> None:
        self.id = task_id
        self.channel = channel
        self.frames = frames  # the bytes of its publishes that never change
        self.seq = 0
        self.listed = False  # in the publisher's queue of finished tasks (eviction order)
        self.latest: _Pending | None = None  # re-sent after a reconnect until confirmed final


class _Pending:
    """One report on its way: in the buffer, then awaiting its confirm."""

    __slots__ = ("body", "due", "final", "resend", "seq", "state", "sticky", "task")

    def __init__(
        self,
        task: _Task,
        seq: int,
        state: str,
        body: bytes,
        final: bool,
        resend: bool = False,
        due: float = 0.0,
    ) -> None:
        self.task = task
        self.due = due  # monotonic start of its confirm latency; 0.0: when it is written
        self.seq = seq
        self.state = state
        self.body = body
        self.final = final
        self.resend = resend
        self.sticky = final or resend


class Publisher(Front, PoolOwner):
    """Publishes task reports to a topic exchange with confirms, never blocking the caller.

    Use it as an async context manager::

        async with Publisher(url="amqp://guest:guest@127.0.0.1:5672/") as pub:
            pub.publish(Report(task_id="42", state="running", progress_report={...}))
            await pub.flush(timeout=5)

    Args:
        url, exchange, settings, config, options: see :class:`~streamer.front.Front`.

    Raises:
        ConfigError: an option is unknown or invalid.
    """

    def _setup(self) -> None:
        settings = self.settings
        self._state = PublisherState.INIT
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ConnectionPool(settings, self)
        self._channels = self._pool.channels
        self._buffer: Buffer[_Pending] = Buffer(len(self._channels), settings.max_pending)
        # Per channel: why reports for it are dropped right now, or None if they are taken.
        self._refuse: list[str | None] = [None] * len(self._channels)
        self._framer = Framer(
            exchange=settings.exchange,
            app_id=fingerprint(settings.app_id),
            fingerprint={"host": socket.gethostname(), "pid": os.getpid()},
            headers=settings.headers,
            mandatory=settings.mandatory,
        )
        self._tasks: dict[str, _Task] = {}
        self._finished: deque[_Task] = deque()
        self._id_prefix = secrets.token_hex(6).encode()
        self._counter = 0
        self._scheduled = False
        self._inflight = 0
        self._resends_pending = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._latency = LatencyHistogram()
        self._published = 0
        self._confirmed = 0
        self._coalesced = 0
        self._resent = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._window = settings.confirm_window
        self._pid = os.getpid()
        self._metrics: MetricsServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, waiting at most ``connect_timeout``; never raises for broker trouble.

        If no broker answers in time the publisher runs disconnected (reports are dropped
        and counted) and keeps trying in the background.
        """
        if self._state is not PublisherState.INIT:
            raise RuntimeError(f"publisher cannot start from state {self._state.value}")
        self._loop = asyncio.get_running_loop()
        self._state = PublisherState.STARTING
        await self._serve_metrics()
        self._pool.start()
        connected = await self._pool.wait_connected(self.settings.connect_timeout)
        if self._state is not PublisherState.STARTING:
            return  # closed while starting
        self._state = PublisherState.RUNNING
        if not connected:
            log.warning(
                "no broker answered at %s within %.1f s; running disconnected (reports are "
                "dropped and counted) and retrying in the background",
                ", ".join(mask_url(u) for u in self.settings.urls),
                self.settings.connect_timeout,
            )
            for ch in self._channels:
                if ch.conn is None:
                    self._refuse[ch.index] = "disconnected"
                    self._drop_waiting(ch.index, "disconnected")
            self._notify()

    async def close(self) -> None:
        """Flush for at most ``close_timeout``, drop what is left, close every connection.

        Idempotent; after it, ``stats.pending`` is 0 and the broker lists no connection of
        ours.
        """
        if self._state in (PublisherState.CLOSING, PublisherState.CLOSED):
            if self._state is PublisherState.CLOSING:
                await self._pool.close()
            return
        if self._state is not PublisherState.INIT and self._pid == os.getpid():
            await self.flush(self.settings.close_timeout)
        self._state = PublisherState.CLOSING
        for ch in self._channels:
            self._drop_waiting(ch.index, "closed")
            self._drop_outstanding(ch, "closed")
        await self._pool.close()
        if self._metrics is not None:
            await self._metrics.close()
        self._state = PublisherState.CLOSED
        self._notify()

    async def _serve_metrics(self) -> None:
        """Serve ``/metrics`` when ``metrics_port`` is set; a port in use is logged, not raised
        (like broker trouble, it must not stop the worker)."""
        port = self.settings.metrics_port
        if port is None:
            return
        from .metrics import PublisherCollector, serve  # prometheus-client only when asked for

        try:
            self._metrics = await serve(
                PublisherCollector(self), port=port, host=self.settings.metrics_host
            )
        except OSError as exc:
            log.error(
                "metrics not served: cannot bind %s:%d (%s)", self.settings.metrics_host, port, exc
            )

    @property
    def metrics_url(self) -> str | None:
        """Where this publisher's metrics are served, or None."""
        m = self._metrics
        return None if m is None else f"http://{m.host}:{m.port}/metrics"

    @property
    def closed(self) -> bool:
        return self._state is PublisherState.CLOSED

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if (
            getattr(self, "_state", None) in (PublisherState.STARTING, PublisherState.RUNNING)
            and self._pid == os.getpid()
        ):
            _warn(f"unclosed streamer publisher {self!r}", ResourceWarning, source=self)

    def __repr__(self) -> str:
        return (
            f"<Publisher {self._state.value} {mask_url(self.settings.urls[0])} "
            f"exchange={self.settings.exchange!r}>"
        )

    # -- the hot path ---------------------------------------------------------------------------

    def publish(self, report: Report, due: float | None = None) -> None:
        """Hand a report over for delivery; returns at once and never waits on the network.

        The report's ``seq`` and ``sent_at`` are set here. Broker trouble never raises: an
        undeliverable report is dropped and counted in :attr:`stats`.

        Args:
            report: the report.
            due: when the report was meant to be sent (``time.time()`` seconds), if not now.
                It becomes ``sent_at`` and the start of its confirm latency, so a caller
                that runs late on a schedule (a load generator) measures its latencies from
                the schedule, the lateness included, instead of hiding it (coordinated
                omission).

        Raises:
            InvalidReport: bad task id, state or ``due``, unserialisable or oversized report.
            RuntimeError: the publisher was never started.
        """
        check(report)
        if due is None:
            sent_at, start = _time(), 0.0
        else:
            sent_at, start = due, due_start(due)
        task = self._tasks.get(report.task_id)
        if task is None:
            task = self._new_task(report.task_id)
        seq = task.seq + 1
        body = encode_stamped(report, seq, sent_at, self.settings.max_body)
        self._accept(task, seq, report.state, body, start)

    def publish_handoff(self, item: Handoff) -> None:
        """Take a report checked and encoded in another thread (see :mod:`streamer.handoff`)."""
        task = self._tasks.get(item.task_id)
        if task is None:
            task = self._new_task(item.task_id)
        seq = task.seq + 1
        self._accept(task, seq, item.state, item.sequenced(seq), item.due)

    def _accept(self, task: _Task, seq: int, state: str, body: bytes, due: float = 0.0) -> None:
        """Count, remember and queue one valid, encoded report (or drop it, counted)."""
        if self._state is not PublisherState.RUNNING and self._state is not PublisherState.STARTING:
            if self._state is PublisherState.INIT:
                raise RuntimeError("publisher not started: use `async with Publisher(...)`")
            task.seq = seq
            self._published += 1
            self._dropped["closed"] += 1
            return
        task.seq = seq
        self._published += 1
        final = state in TERMINAL_STATES
        entry = _Pending(task, seq, state, body, final, False, due)
        if final and not task.listed:
            task.listed = True
            self._finished.append(task)  # eviction candidates, oldest first
        task.latest = entry
        refuse = self._refuse[task.channel]
        if refuse is not None:
            self._dropped[refuse] += 1
            return
        # Coalesce only under pressure: when this channel's window cannot take the report now.
        channel = task.channel
        pressure = (
            len(self._channels[channel].outstanding) + self._buffer.count(channel) >= self._window
        )
        put = self._buffer.put(channel, task, entry, pressure)
        if put is Put.ADDED:
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._write)  # type: ignore[union-attr]
        elif put is Put.COALESCED:
            self._coalesced += 1
        else:
            self._dropped["overflow"] += 1

    def _new_task(self, task_id: str) -> _Task:
        key = routing_key(task_id, self.settings.routing_prefix)
        index = self._pool.channel_index(task_id)
        frames = self._framer.task(self._channels[index].number, key, task_id)
        task = _Task(task_id, index, frames)
        self._tasks[task_id] = task
        if len(self._tasks) > self.settings.max_tasks:
            self._evict()
        return task

    def _evict(self) -> None:
        """Forget the oldest finished task (or, failing that, the oldest task)."""
        while self._finished:
            old = self._finished.popleft()
            old.listed = False
            # Still finished? (latest is None once its final report was confirmed.)
            if self._tasks.get(old.id) is old and (old.latest is None or old.latest.final):
                del self._tasks[old.id]
                return
        del self._tasks[next(iter(self._tasks))]

    def _write(self) -> None:
        """Write what the confirm windows allow: one socket write per connection."""
        self._scheduled = False
        batches: dict[Any, list[bytes]] = {}
        now = time.monotonic()
        stamp = int(time.time())
        message = self._framer.message
        prefix = self._id_prefix
        counter = self._counter
        written = 0
        for ch in self._channels:
            conn = ch.conn
            if conn is None or not conn.writable or conn.blocked:
                continue
            room = self._window - len(ch.outstanding)
            if room <= 0 or not self._buffer.waiting(ch.index):
                continue
            entries = self._buffer.take(ch.index, room)
            parts = batches.get(conn)
            if parts is None:
                parts = batches[conn] = []
            outstanding = ch.outstanding
            tag = ch.next_tag
            number = ch.number
            for e in entries:
                counter += 1
                message(
                    parts,
                    number,
                    e.task.frames,
                    e.state,
                    e.seq,
                    b"%s-%x" % (prefix, counter),
                    stamp,
                    e.body,
                )
                outstanding[tag] = (e.due or now, e)
                tag += 1
            ch.next_tag = tag
            written += len(entries)
        self._counter = counter
        self._inflight += written
        self._buffer.reserved = self._inflight
        for conn, parts in batches.items():
            conn.write(b"".join(parts))

    # -- pool events ----------------------------------------------------------------------------

    def confirm(self, channel: Channel, tag: int, multiple: bool, ok: bool) -> None:
        outstanding = channel.outstanding
        now = time.monotonic()
        settled: list[_Pending] = []
        if multiple:
            observe = self._latency.observe
            run_t, run_n = 0.0, 0
            while outstanding:
                first = next(iter(outstanding))
                if first > tag:
                    break
                t, entry = outstanding.popitem(last=False)[1]
                settled.append(entry)
                if t != run_t:
                    if run_n:
                        observe(now - run_t, run_n)
                    run_t, run_n = t, 0
                run_n += 1
            if run_n:
                observe(now - run_t, run_n)
        else:
            item = outstanding.pop(tag, None)
            if item is None:
                return
            self._latency.observe(now - item[0])
            settled.append(item[1])
        self._inflight -= len(settled)
        self._buffer.reserved = self._inflight
        returned, channel.returned = channel.returned, 0
        for entry in settled:
            if entry.resend:
                self._resends_pending -= 1
                if ok and not returned:
                    self._resent += 1
            elif not ok:
                self._dropped["nacked"] += 1
            elif returned:
                returned -= 1
                self._dropped["returned"] += 1
            else:
                self._confirmed += 1
            if ok and entry.final and entry.task.latest is entry:
                entry.task.latest = None  # delivered for good: nothing to re-send
        if self._buffer and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._write)  # type: ignore[union-attr]
        if self._waiters:
            self._notify()

    def channels_open(self, channels: list[Channel]) -> None:
        indexes = {ch.index for ch in channels}
        for ch in channels:
            self._refuse[ch.index] = None
        if self._state is not PublisherState.RUNNING:
            self.writable()
            return
        resend = 0
        for task in self._tasks.values():
            latest = task.latest
            if latest is None or task.channel not in indexes:
                continue
            entry = _Pending(
                task, latest.seq, latest.state, latest.body, latest.final, True, latest.due
            )
            if self._buffer.put(task.channel, task, entry, coalesce=False) is Put.ADDED:
                resend += 1
        self._resends_pending += resend
        if resend:
            log.info("re-sending the latest report of %d tasks after reconnecting", resend)
        self.writable()

    def channels_lost(self, channels: list[Channel]) -> None:
        for ch in channels:
            self._refuse[ch.index] = "disconnected"
            self._drop_waiting(ch.index, "disconnected")
            self._drop_outstanding(ch, "disconnected")
        self._notify()

    def blocked(self, channels: list[Channel], blocked: bool) -> None:
        for ch in channels:
            self._refuse[ch.index] = "blocked" if blocked else None
            if blocked:
                self._drop_waiting(ch.index, "blocked")
        self._notify()
        if not blocked:
            self.writable()

    def writable(self) -> None:
        if self._buffer and not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._write)

    def forked(self) -> None:
        """In a fork child this publisher is closed: the parent owns its connections.

        Reports published to it count as dropped (``closed``); the child makes its own
        publisher (the background publisher does so by itself).
        """
        self._state = PublisherState.CLOSED
        self._scheduled = True  # the parent's loop never runs here: schedule nothing
        self._waiters.clear()

    def _drop_waiting(self, index: int, reason: str) -> None:
        self._count_drops(self._buffer.clear(index), reason)

    def _drop_outstanding(self, ch: Channel, reason: str) -> None:
        entries = [entry for _, entry in ch.outstanding.values()]
        ch.outstanding.clear()
        self._inflight -= len(entries)
        self._buffer.reserved = self._inflight
        self._count_drops(entries, reason)

    def _count_drops(self, entries: list[_Pending], reason: str) -> None:
        for entry in entries:
            if entry.resend:
                self._resends_pending -= 1
            else:
                self._dropped[reason] += 1

    # -- waiting and accounting -----------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Reports published but neither confirmed, coalesced nor dropped yet."""
        return len(self._buffer) + self._inflight - self._resends_pending

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every published report is confirmed or dropped.

        Returns:
            True if nothing is pending, False if ``timeout`` seconds passed first.
        """
        return await self._wait_pending(0, timeout)

    async def throttle(self, max_pending: int | None = None, timeout: float | None = None) -> bool:
        """Wait until fewer than ``max_pending`` reports are pending (default: half the cap).

        For load generators that want the broker's full rate without coalescing; a task
        worker never needs it. Always yields to the event loop at least once, so the writer
        gets to run even when there is room already.
        """
        limit = self.settings.max_pending // 2 if max_pending is None else max_pending
        await asyncio.sleep(0)
        return await self._wait_pending(max(limit - 1, 0), timeout)

    async def _wait_pending(self, at_most: int, timeout: float | None) -> bool:
        if self.pending <= at_most:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (at_most, future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True

    def _notify(self) -> None:
        pending = self.pending
        for at_most, future in self._waiters:
            if pending <= at_most and not future.done():
                future.set_result(None)

    @property
    def stats(self) -> Stats:
        """A consistent snapshot of the accounting (see :class:`~streamer.stats.Stats`)."""
        dropped = dict(self._dropped)
        return Stats(
            published=self._published,
            confirmed=self._confirmed,
            coalesced=self._coalesced,
            dropped=sum(dropped.values()),
            dropped_by_reason=dropped,
            pending=self.pending,
            resent=self._resent,
            reconnects=self._pool.reconnects,
            connections=self._pool.open_connections,
            channels=sum(1 for ch in self._channels if ch.conn is not None),
            confirm_latency_p50=self._latency.quantile(0.5),
            confirm_latency_p99=self._latency.quantile(0.99),
            confirm_latency_max=self._latency.max,
            confirm_latency_counts=tuple(self._latency.counts),
            confirm_latency_sum=self._latency.total,
        )
