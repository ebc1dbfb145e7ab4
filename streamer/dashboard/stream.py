"""The live event stream (server-sent events): changed rows a few times a second, whatever
the report rate.

Every ``interval`` seconds the rows of the tasks that changed since the last batch (a dirty
set) go out in one event to every open page. A burst of thousands of reports per second
therefore costs each browser at most four small updates a second, and a task that sent fifty
reports in between is sent once. A page too slow to read its stream is resynchronised from a
snapshot instead of being buffered for: a viewer drops rather than queues.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from aiohttp import web

from ..board import Board
from .rows import Batch, Row, Summary, encode

__all__ = ["EventStream"]

_KEEPALIVE: Final = 15.0  # seconds between SSE comments on a quiet stream (proxies time out)
_SUBSCRIBER_BACKLOG: Final = 8  # batches a page may fall behind before it is resynchronised
_MAX_DEPTH: Final = 8  # ancestors of a changed task re-sent at most


class Subscriber:
    """One open page: the batches it has yet to read, or a request to resynchronise it."""

    __slots__ = ("batches", "resync")

    def __init__(self) -> None:
        self.batches: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: stop
        self.resync = False

    def offer(self, data: bytes) -> None:
        if self.resync:
            return  # the snapshot it will get includes this batch
        if self.batches.qsize() >= _SUBSCRIBER_BACKLOG:
            # Too slow to keep up: forget what it missed and send it the board afresh.
            while not self.batches.empty():
                self.batches.get_nowait()
            self.resync = True
            self.batches.put_nowait(b"")
            return
        self.batches.put_nowait(data)


class EventStream:
    """Batches of changed rows for every open page of one board.

    Args:
        board: the board the rows come from.
        summary: the header, built when a batch goes out.
        interval: seconds between two batches.
        tick: called with the time at every interval, before the batch is built (the
            dashboard samples its rate there).
    """

    def __init__(
        self,
        board: Board,
        summary: Callable[[], Summary],
        interval: float,
        tick: Callable[[float], None],
    ) -> None:
        self.board = board
        self.summary = summary
        self.interval = interval
        self.tick = tick
        self.batches = 0
        self._dirty: set[str] = set()
        self._stalled: set[str] = set()  # ids shown stalled: a row changes when it stalls
        self._listed: set[str] = set()  # ids some open page may hold
        self._evicted_seen = 0
        self._subscribers: set[Subscriber] = set()

    @property
    def viewers(self) -> int:
        return len(self._subscribers)

    @property
    def watched(self) -> bool:
        """Whether a page is open (else no row changes need noting)."""
        return bool(self._subscribers)

    def touch(self, task_id: str) -> None:
        """Note that a task's row changed (it goes out with the next batch)."""
        self._dirty.add(task_id)

    def close(self) -> None:
        """End every open stream."""
        for sub in self._subscribers:
            sub.batches.put_nowait(None)

    def snapshot(self) -> bytes:
        """Every task on the board as one ``snapshot`` event; its ids are now listed."""
        board, now = self.board, time.time()
        rows = [Row.of(task, board, now) for task in board.recent()]
        self._listed.update(row.id for row in rows)
        batch = Batch(
            n=self.batches, now=time.time(), rows=rows, removed=[], summary=self.summary()
        )
        return b"event: snapshot\ndata: " + encode(batch) + b"\n\n"

    def _batch(self, now: float, summary: Summary) -> bytes:
        """The rows that changed since the last batch, and the ids that left the board."""
        board = self.board
        rows = []
        # A change in a child changes its parent's family roll-up: its ancestors go too.
        parent_of = board.families.parent
        for task_id in list(self._dirty):
            parent = parent_of(task_id)
            for _ in range(_MAX_DEPTH):
                if parent is None or parent in self._dirty:
                    break
                self._dirty.add(parent)
                parent = parent_of(parent)
        for task_id in self._dirty:
            task = board.get(task_id)
            if task is not None:
                rows.append(Row.of(task, board, now))
        self._dirty.clear()
        removed: list[str] = []
        if board.evicted != self._evicted_seen:
            self._evicted_seen = board.evicted
            alive = {task.task_id for task in board}
            removed = [task_id for task_id in self._listed if task_id not in alive]
            self._listed.intersection_update(alive)
        self._listed.update(row.id for row in rows)
        self.batches += 1
        batch = Batch(n=self.batches, now=now, rows=rows, removed=removed, summary=summary)
        return b"data: " + encode(batch) + b"\n\n"

    async def run(self) -> None:
        """Every ``interval``: one batch to every open page (none while nobody watches)."""
        last_summary: Summary | None = None
        while True:
            await asyncio.sleep(self.interval)
            now = time.time()
            self.tick(now)
            if not self._subscribers:
                self._dirty.clear()
                self._stalled.clear()
                self._listed.clear()
                self._evicted_seen = self.board.evicted
                last_summary = None
                continue
            # A stalled task sends nothing, so nothing marks its row: look for them.
            stalled = {task.task_id for task in self.board.stalled_tasks(now)}
            self._dirty |= stalled ^ self._stalled
            self._stalled = stalled
            summary = self.summary()
            # Nothing changed on the board: still send the header when it did change (the
            # rate falling to zero, the broker connection lost).
            if (
                not self._dirty
                and self.board.evicted == self._evicted_seen
                and summary == last_summary
            ):
                continue
            last_summary = summary
            data = self._batch(now, summary)
            for sub in self._subscribers:
                sub.offer(data)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``/events``: a snapshot, then batches until the page goes or the dashboard closes."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        sub = Subscriber()
        snapshot = self.snapshot()  # taken and subscribed with no await in between
        self._subscribers.add(sub)
        try:
            await response.write(b"retry: 1000\n" + snapshot)
            while True:
                try:
                    async with asyncio.timeout(_KEEPALIVE):
                        data = await sub.batches.get()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if data is None:
                    break
                if not data:  # fell behind: start again from the board as it is now
                    sub.resync = False
                    data = self.snapshot()
                await response.write(data)
        except ConnectionError:
            pass  # the page went away
        finally:
            self._subscribers.discard(sub)
        return response
