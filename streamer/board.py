"""The task board: a stream of reports folded into the current state of every task.

Consumers (``watch``, the dashboard, the load harness) see reports in per-task order but with
holes (superseded or dropped reports) and the odd repeat (a publisher re-sends the latest
report after reconnecting). The board keeps, per task, the newest report by ``seq``, counts
gaps, ignores stale and repeated reports, and derives progress, rate and ETA from the steps
of ``progress_report`` (:mod:`streamer.progress`: a bar that never goes back), read only when
a view asks. A task silent for much longer than it usually is between reports is stalled
(a worker that died mid-task). Memory is bounded: finished tasks are evicted oldest first
beyond ``max_finished``, and the total is capped too.

Input from the exchange is trusted only so far: a ``seq`` far from its task's last one is a
counted jump that restarts the task's sequence (never a billion gaps, never a frozen task),
and a ``sent_at`` that would make an end-to-end latency outside [0, 1 h] is counted as clock
skew, not observed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final

from .family import Families, Rollup
from .progress import Progress, Step, current_step
from .report import TERMINAL_STATES, Report, progress_of
from .stats import LatencyHistogram

__all__ = ["Board", "TaskState"]

_MAX_LATENCY: Final = 3600.0  # end-to-end latencies beyond an hour are clock skew
#: A task is stalled after max(stall_after, _STALL_INTERVALS x its typical interval between
#: reports) without one.
_STALL_INTERVALS: Final = 10
_STEP: Final = 1.1  # how fast the typical interval follows (a streaming median, in log)
_MIN_INTERVAL: Final = 1e-3  # seconds: the typical interval never reaches 0 (it could not grow)


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # RFC 3339 without offset: the publisher writes UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class TaskState:
    """What the board knows of one task.

    Progress is read from the latest report only when a view asks (:attr:`progress`,
    :attr:`done`, :attr:`rate`, ...), not for every report folded in: a view draws a few
    times a second while reports may arrive by the thousand (see :mod:`streamer.progress`).
    """

    __slots__ = (
        "_progress",
        "_progress_at",
        "_read",
        "_with_progress",
        "first_seen",
        "gaps",
        "interval",
        "last_seen",
        "report",
        "seq",
    )

    def __init__(self, report: Report, now: float) -> None:
        self.report = report
        self.seq = report.seq  # the sequence so far (a report with seq 0 leaves it alone)
        self.first_seen = now
        self.last_seen = now
        self.gaps = 0  # reports never seen (missing seq numbers)
        #: Typical seconds between two of its reports (a streaming estimate of the median).
        self.interval: float | None = None
        self._progress = Progress()
        self._progress.update(progress_of(report), now)  # the first sample of its rate
        # The latest report that said something of progress (a bare `finished` says nothing)
        # and when it came; read when a view asks.
        self._with_progress = self._read = report
        self._progress_at = now

    def _saw(self, report: Report, now: float) -> None:
        """A newer report arrived (the board checked its seq)."""
        gap = now - self.last_seen
        interval = self.interval
        if interval is None:
            self.interval = max(gap, _MIN_INTERVAL)
        elif gap > interval:
            self.interval = interval * _STEP
        else:  # (reports of one socket read share a time: a gap of 0 is common)
            self.interval = max(interval / _STEP, _MIN_INTERVAL)
        self.report = report
        self.last_seen = now
        if report.progress_report:
            self._with_progress = report
            self._progress_at = now

    def progress_of(self) -> Progress:
        """Its progress as of its latest report with one (read now if not read yet)."""
        report = self._with_progress
        if self._read is not report:
            self._read = report
            self._progress.update(progress_of(report), self._progress_at)
        return self._progress

    @property
    def step(self) -> str:
        """The name of its step under way ("" when none): its first step not finished, as of
        its latest report with progress (read cheaply when no view has read that yet)."""
        if self._read is self._with_progress:
            current = self._progress.current
            return "" if current is None else current.name
        return current_step(progress_of(self._with_progress))

    @property
    def task_id(self) -> str:
        return self.report.task_id

    @property
    def state(self) -> str:
        return self.report.state

    @property
    def finished(self) -> bool:
        return self.report.state in TERMINAL_STATES

    @property
    def steps(self) -> list[Step]:
        return self.progress_of().steps

    @property
    def done(self) -> int | None:
        """Items done over the steps that count them; None when none does."""
        return self.progress_of().done

    @property
    def total(self) -> int | None:
        return self.progress_of().total

    @property
    def progress(self) -> float | None:
        """Overall progress in 0..1, never lower than before unless the work grew (1 for a
        finished task); None when its reports carry no steps."""
        if self.report.state == "finished":
            return 1.0
        progress = self.progress_of()
        return progress.fraction if progress.steps else None

    @property
    def rate(self) -> float | None:
        """Items per second: smoothed while it runs, its average once it ended."""
        progress = self.progress_of()
        end = self.ended
        if end is not None:
            took = end - self.started
            return progress.done / took if progress.done and took > 0 else None
        return progress.rate

    @property
    def started(self) -> float:
        """Unix time it started: its own ``start_time`` when it sent one, else first seen."""
        start = _timestamp(self.report.start_time)
        return self.first_seen if start is None else start

    @property
    def ended(self) -> float | None:
        """Unix time it ended (its ``finish_time``, else its last report); None while active."""
        if not self.finished:
            return None
        end = _timestamp(self.report.finish_time)
        return self.last_seen if end is None else end

    @property
    def eta(self) -> float | None:
        """Seconds until done, or None when unknown (never 0 while work remains)."""
        if self.finished:
            return None
        return self.progress_of().eta()

    def stalled(self, now: float, after: float) -> bool:
        """Not ended, and silent for longer than ``max(after, 10 x its typical interval)``."""
        if self.finished:
            return False
        bound = after if self.interval is None else max(after, _STALL_INTERVALS * self.interval)
        return now - self.last_seen > bound


class Board:
    """Per-task state folded from reports, bounded in memory.

    Args:
        max_finished: finished tasks kept (the oldest finished are evicted first).
        max_tasks: tasks kept in all; beyond it the least recently updated go.
        max_seq_jump: a ``seq`` further than this from its task's last one is a jump (see
            above), not a gap.
        stall_after: seconds of silence after which an active task is stalled, at least
            (a task that reports slowly gets 10 times its usual interval).
    """

    def __init__(
        self,
        *,
        max_finished: int = 1_000,
        max_tasks: int = 10_000,
        max_seq_jump: int = 1_000_000,
        stall_after: float = 30.0,
    ) -> None:
        self.max_finished = max_finished
        self.max_tasks = max_tasks
        self.max_seq_jump = max_seq_jump
        self.stall_after = stall_after
        self._tasks: OrderedDict[str, TaskState] = OrderedDict()  # least recently updated first
        self._finished: OrderedDict[str, None] = OrderedDict()  # oldest finish first
        self.reports = 0  # applied
        self.stale = 0  # ignored: lower seq than the one shown
        self.duplicates = 0  # ignored: same seq again (re-sent after a reconnect)
        self.evicted = 0
        self.jumps = 0  # reports whose seq jumped more than max_seq_jump: a fresh sequence
        self.latency = LatencyHistogram()  # sent_at -> applied, when within [0, 1 h]
        self.clock_skew = 0  # reports whose sent_at was in the future or over an hour old
        # Kept as reports are folded, so that a header, a scrape or an API call costs O(1)
        # however many tasks the board holds.
        self._by_state: dict[str, int] = {}
        self._gaps = 0
        self.families = Families()

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[TaskState]:
        return iter(list(self._tasks.values()))

    def recent(self) -> Iterator[TaskState]:
        """Tasks, most recently updated first (a snapshot: safe to fold while iterating)."""
        return reversed(list(self._tasks.values()))

    def get(self, task_id: str) -> TaskState | None:
        return self._tasks.get(task_id)

    @property
    def received(self) -> int:
        """Well-formed reports folded in or ignored (stale, repeated): all that reached it."""
        return self.reports + self.stale + self.duplicates

    @property
    def gaps(self) -> int:
        """Reports known to be missing, over the tasks still on the board."""
        return self._gaps

    def by_state(self) -> dict[str, int]:
        """Tasks on the board per state (states with none left out)."""
        return {state: n for state, n in self._by_state.items() if n}

    def stalled(self, task: TaskState, now: float | None = None) -> bool:
        """Whether ``task`` is stalled: active, silent beyond the bound (see ``stall_after``)."""
        return task.stalled(time.time() if now is None else now, self.stall_after)

    def family(self, task: TaskState, now: float | None = None) -> Rollup | None:
        """``task`` with the tasks it spawned (and theirs) rolled up; None without any."""
        if not task.report.spawned_tasks:
            return None
        now = time.time() if now is None else now
        get = self._tasks.get
        return self.families.rollup(self.families.family(task, get), get, now, self.stall_after)

    def groups(self, now: float | None = None) -> dict[str, Rollup]:
        """Every group (``group_id``) with a member on the board, rolled up."""
        now = time.time() if now is None else now
        get = self._tasks.get
        return {
            group: self.families.rollup(members, get, now, self.stall_after)
            for group, members in self.families.groups().items()
        }

    def stalled_tasks(self, now: float | None = None) -> list[TaskState]:
        """Active tasks stalled now (a pass over the board: for a scrape, a header, a tick)."""
        now = time.time() if now is None else now
        after = self.stall_after
        return [task for task in self._tasks.values() if task.stalled(now, after)]

    def count_stalled(self, now: float | None = None) -> int:
        return len(self.stalled_tasks(now))

    def apply(
        self, report: Report, now: float | None = None, *, replayed: bool = False
    ) -> TaskState | None:
        """Fold one report in; returns the task's state, or None when the report was stale
        or a repeat (and ignored), or its task was evicted at once (a cap of 0).

        A report with ``seq`` 0 (not from a streamer publisher) always applies. A
        ``replayed`` one (read from the history, ``now`` being when it was sent) is not a
        latency observation.
        """
        now = time.time() if now is None else now
        if report.sent_at and not replayed:
            latency = now - report.sent_at
            if 0.0 <= latency <= _MAX_LATENCY:
                self.latency.observe(latency)
            else:  # another clock, or a made-up time: no observation could mean anything
                self.clock_skew += 1
        task_id = report.task_id
        tasks = self._tasks
        task = tasks.get(task_id)
        by_state = self._by_state
        seq = report.seq
        if task is None:
            task = tasks[task_id] = TaskState(report, now)
            if seq > 1:
                if seq - 1 > self.max_seq_jump:
                    self.jumps += 1  # no one missed a million reports: count no gaps
                else:
                    task.gaps = seq - 1  # joined late or its first reports were lost
                    self._gaps += task.gaps
            by_state[report.state] = by_state.get(report.state, 0) + 1
        else:
            last = task.seq
            missed = seq - last - 1  # (seq 0: a foreign report, no gap known)
            if seq and (missed > self.max_seq_jump or last - seq > self.max_seq_jump):
                # A sequence far from this task's: foreign, or a publisher that started
                # again. Shown, counted, and the task's sequence goes on from it, so that
                # neither a huge gap is counted nor the genuine reports after it look stale.
                self.jumps += 1
                missed = 0
            elif seq and seq <= last:
                if seq == last:
                    self.duplicates += 1
                else:
                    self.stale += 1
                return None
            old_state = task.report.state
            was_finished = old_state in TERMINAL_STATES
            if missed > 0:
                task.gaps += missed
                self._gaps += missed
            task._saw(report, now)
            if seq:
                task.seq = seq
            if report.state != old_state:
                by_state[old_state] -= 1
                by_state[report.state] = by_state.get(report.state, 0) + 1
            tasks.move_to_end(task_id)
            if was_finished and report.state not in TERMINAL_STATES:
                self._finished.pop(task_id, None)
        self.reports += 1
        if report.spawned_tasks or report.group_id is not None:
            self.families.saw(report)
        full = len(tasks) > self.max_tasks
        if report.state in TERMINAL_STATES:
            self._finished[task_id] = None
            self._finished.move_to_end(task_id)
            full = full or len(self._finished) > self.max_finished
        if full:
            self._evict()
            if task_id not in tasks:  # (a cap of 0: nothing is kept)
                return None
        return task

    def _evict(self) -> None:
        while len(self._finished) > self.max_finished:
            task_id, _ = self._finished.popitem(last=False)
            self._forget(self._tasks.pop(task_id))
        while len(self._tasks) > self.max_tasks:
            task_id, task = self._tasks.popitem(last=False)
            self._finished.pop(task_id, None)
            self._forget(task)

    def _forget(self, task: TaskState) -> None:
        self.families.forget(task)
        self.evicted += 1
        self._gaps -= task.gaps
        self._by_state[task.state] -= 1
