"""The background publisher: streamer for ordinary synchronous task workers.

Most workers are plain threads or processes (Celery, RQ, scripts, thread pools). A
:class:`BackgroundPublisher` runs the asyncio :class:`~streamer.publisher.Publisher` on its
own uvloop in a daemon OS thread. ``publish()`` from any thread validates and encodes the
report right there (so bad input raises in the caller), appends it to an inbox and wakes the
loop at most once per batch; the loop thread assigns the per-task sequence and takes it from
there. Nothing the broker does can block or raise in the caller.

Fork safety: after ``os.fork()`` the child starts with an empty inbox and no thread; its
first ``publish()`` starts a fresh thread and connection. The parent's socket is never used
by the child (the pool lets go of it at fork time).

gevent (locust monkey-patches everything): the loop thread must be a real OS thread and the
inbox lock a real lock, so both come from the unpatched modules when gevent is present.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any, Final, NoReturn

import msgspec
import uvloop

from .front import BlockingFront
from .handoff import Handoff, encode_handoff
from .publisher import Publisher
from .report import Report, check, due_start
from .routing import routing_key
from .settings import mask_url
from .stats import Stats

__all__ = ["BackgroundPublisher"]

log = logging.getLogger(__name__)

_ATEXIT_FLUSH: Final = 5.0
_live: Final[weakref.WeakSet[BackgroundPublisher]] = weakref.WeakSet()
_hooked = False  # atexit and fork hooks installed (by the first publisher)


def _real(module: str, name: str) -> Any:
    """``module.name`` as it was before gevent monkey-patched it (or as it is)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched(module):
        return monkey.get_original(module, name)
    return getattr(__import__(module), name)


class _Signal:
    """A set-once event between OS threads, built on a raw lock (gevent cannot patch it)."""

    def __init__(self) -> None:
        self._lock = _real("_thread", "allocate_lock")()
        self._lock.acquire()
        self.value: Any = None

    def set(self, value: Any = None) -> None:
        self.value = value
        self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        if not self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            return False
        self._lock.release()  # stays set for every later waiter
        return True


class BackgroundPublisher(BlockingFront):
    """A publisher for synchronous code: ``publish()`` from any thread, never blocks.

    Usable as a context manager; also closed at interpreter exit with a bounded flush::

        pub = BackgroundPublisher(url="amqp://guest:guest@127.0.0.1:5672/")
        pub.publish(Report(task_id="42", state="running"))
        pub.flush(timeout=5)

    Args:
        url, exchange, settings, config, options: see :class:`~streamer.front.Front`.

    Raises:
        ConfigError: an option is unknown or invalid.
    """

    def _setup(self) -> None:
        self._closed = False
        self._reset()
        _track(self)

    def _reset(self) -> None:
        """Forget thread, loop and inbox: at creation and in a fork child."""
        self._lock = _real("_thread", "allocate_lock")()
        self._inbox: list[Handoff] = []
        self._wake_pending = False
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publisher: Publisher | None = None
        self._accepting = False
        self._stopped: _Signal | None = None
        self._loop_ready = _Signal()
        self._refused = {"closed": 0, "overflow": 0}  # dropped before reaching the loop
        self._known: dict[str, None] = {}

    # -- the caller's side ----------------------------------------------------------------------

    def publish(self, report: Report, due: float | None = None) -> None:
        """Validate, encode and hand over a report; returns in microseconds, from any thread.

        ``due``: as for :meth:`Publisher.publish` (when the report was meant to be sent).

        Raises:
            InvalidReport: bad task id, state or ``due``, unserialisable or oversized report.
        """
        check(report)
        task_id = report.task_id
        if task_id not in self._known:
            routing_key(task_id, self.settings.routing_prefix)
            if len(self._known) >= self.settings.max_tasks:
                self._known.clear()
            self._known[task_id] = None
        if due is None:
            item = encode_handoff(report, time.time(), self.settings.max_body)
        else:
            item = encode_handoff(report, due, self.settings.max_body, due_start(due))
        if not self._started:
            self._start()
        with self._lock:
            if self._closed:
                self._refused["closed"] += 1
                return
            if len(self._inbox) >= self.settings.max_pending:
                self._refused["overflow"] += 1  # the loop thread cannot keep up: drop, counted
                return
            self._inbox.append(item)
            if self._wake_pending:
                return
            self._wake_pending = True
        loop = self._loop
        if loop is not None:
            try:  # noqa: SIM105 - once per batch, but a with-block costs more than try
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop just closed: close() drops what it did not take
                pass

    def _start(self) -> None:
        """Start the loop thread (first use in this process); never waits for it."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            self._stopped = _Signal()
            self._publisher = Publisher(settings=self.settings)
            _real("_thread", "start_new_thread")(self._run, (self._publisher, self._stopped))

    # -- the loop thread ------------------------------------------------------------------------

    def _run(self, publisher: Publisher, stopped: _Signal) -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._loop_ready.set()
        try:
            loop.run_until_complete(self._main(publisher))
        except Exception:
            log.exception("streamer background publisher stopped unexpectedly")
        finally:
            self._loop = None
            loop.close()
            stopped.set()

    async def _main(self, publisher: Publisher) -> None:
        self._stop = asyncio.Event()
        starting = asyncio.ensure_future(publisher.start())
        await asyncio.sleep(0)  # start() is now under way: reports are taken (and wait)
        self._accepting = True
        self._drain()  # whatever arrived before the loop ran
        await starting
        await self._stop.wait()
        self._drain()
        await publisher.close()

    def _drain(self) -> None:
        """Move the inbox into the publisher (loop thread), in publish order."""
        if not self._accepting:
            return  # too early: _main drains as soon as the publisher takes reports
        with self._lock:
            items, self._inbox = self._inbox, []
            self._wake_pending = False
        assert self._publisher is not None
        take = self._publisher.publish_handoff
        for item in items:
            take(item)

    # -- blocking controls ----------------------------------------------------------------------

    def _call(self, factory: Callable[[], Any], timeout: float | None) -> Any:
        """Run ``factory()`` (a coroutine) on the loop thread; its result, or None."""
        if not self._started:
            return None
        self._loop_ready.wait(timeout)
        loop = self._loop
        if loop is None:
            return None
        done = _Signal()

        async def run() -> None:
            try:
                done.value = await factory()
            finally:
                done.set(done.value)

        try:
            loop.call_soon_threadsafe(asyncio.ensure_future, run())
        except RuntimeError:  # the loop closed meanwhile
            return None
        return done.value if done.wait(timeout) else None

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every report published so far is confirmed or dropped.

        Returns:
            True if nothing is pending, False if ``timeout`` seconds passed first.
        """
        if not self._started:
            return True

        async def flush() -> bool:
            self._drain()
            assert self._publisher is not None
            return await self._publisher.flush(timeout)

        return bool(self._call(flush, None if timeout is None else timeout + 1))

    def close(self, timeout: float | None = None) -> None:
        """Flush for at most ``timeout`` (default ``close_timeout``), then stop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not self._started:
            return
        budget = self.settings.close_timeout if timeout is None else timeout
        self.flush(budget)
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                return
            assert self._stopped is not None
            self._stopped.wait(budget + 2)
        with self._lock:  # raced in after the loop's last drain: count, do not keep
            self._refused["closed"] += len(self._inbox)
            self._inbox.clear()

    @property
    def stats(self) -> Stats:
        """A consistent snapshot of the accounting, reports still in the inbox included."""

        async def on_loop() -> Stats:
            self._drain()
            assert self._publisher is not None
            return self._publisher.stats

        stats = self._call(on_loop, 5)
        with self._lock:
            waiting, refused = len(self._inbox), dict(self._refused)
        if stats is None:  # no loop (never started or stopped): nothing else touches it
            stats = self._publisher.stats if self._publisher is not None else _EMPTY
        dropped = dict(stats.dropped_by_reason)
        for reason, count in refused.items():
            dropped[reason] += count
        extra = sum(refused.values())
        total: Stats = msgspec.structs.replace(
            stats,
            published=stats.published + waiting + extra,
            dropped=stats.dropped + extra,
            dropped_by_reason=dropped,
            pending=stats.pending + waiting,
        )
        return total

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "idle"
        return f"<BackgroundPublisher {state} {mask_url(self.settings.urls[0])}>"


_EMPTY: Final = Stats()  # a publisher that never started


def _after_fork_in_child() -> None:
    for pub in list(_live):
        pub._reset()


def _close_all() -> None:
    for pub in list(_live):
        try:
            pub.close(min(pub.settings.close_timeout, _ATEXIT_FLUSH))
        except Exception:  # never let our cleanup break the interpreter's exit
            log.exception("closing a background publisher at exit")


_os_exit: Callable[[int], NoReturn] = os._exit  # what os._exit was before we wrapped it


def _exit_flushing(status: int) -> NoReturn:
    """``os._exit`` that first flushes (bounded) what this process's publishers hold.

    Most task workers do not end through interpreter exit: a ``multiprocessing`` child
    (fork and forkserver), a pool worker retired after its quota of tasks, a Celery prefork
    child and an RQ work horse all return from their work and call ``os._exit``, which runs
    no ``atexit`` handler, so a task's last reports (its final state above all) would vanish.
    coverage.py patches ``os._exit`` for the same reason. A publisher that never published
    in this process (one inherited through a fork, say) costs nothing here.
    """
    try:
        _close_all()
    finally:
        _os_exit(status)


def _track(pub: BackgroundPublisher) -> None:
    """Remember ``pub`` for the exit flush and fork reset; the first one installs the hooks
    (importing streamer installs none: a program that never publishes is left alone)."""
    global _hooked, _os_exit
    if not _hooked:
        _hooked = True
        atexit.register(_close_all)
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _os_exit, os._exit = os._exit, _exit_flushing
    _live.add(pub)
