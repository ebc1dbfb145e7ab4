"""The task board: a stream of reports folded into the current state of every task.

Consumers (``watch``, the dashboard, the load harness) see reports in per-task order but with
holes (superseded or dropped reports) and the odd repeat (a publisher re-sends the latest
report after reconnecting). The board keeps, per task, the newest report by ``seq``, counts
gaps, ignores stale and repeated reports, and derives progress, rate and ETA from the
``items_done``/``items_total`` counters in ``progress_report``. Memory is bounded: finished
tasks are evicted oldest first beyond ``max_finished``, and the total is capped too.

Input from the exchange is trusted only so far: a ``seq`` far from its task's last one is a
counted jump that restarts the task's sequence (never a billion gaps, never a frozen task),
and a ``sent_at`` that would make an end-to-end latency outside [0, 1 h] is counted as clock
skew, not observed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from .report import TERMINAL_STATES, Report
from .stats import LatencyHistogram

__all__ = ["Board", "TaskState", "progress_counts"]

# Pairs of (done, total) keys recognised in progress_report entries, first match wins:
# ("items_done", "items_total"), then ("done", "total") (spelt out in _count for speed).
_MAX_DEPTH: Final = 8  # progress_report levels searched for counters
_MAX_LATENCY: Final = 3600.0  # end-to-end latencies beyond an hour are clock skew
_RATE_SMOOTHING: Final = 0.3  # weight of the newest rate sample


def progress_counts(progress: Mapping[str, Any]) -> tuple[int, int] | None:
    """Sum the done/total counters found anywhere in a ``progress_report`` (Pulp nests them).

    A node with a ``(done, total)`` pair counts as a whole (``items_done``/``items_total`` first);
    otherwise the objects in it are searched, down to ``_MAX_DEPTH`` levels (a foreign
    publisher's deeply nested object costs no more than that).

    Returns:
        ``(done, total)``, or None when the report carries no counters.
    """
    return _count(progress, _MAX_DEPTH)


def _count(node: Mapping[str, Any], depth: int) -> tuple[int, int] | None:
    # Runs for every report a view receives: exact type checks (JSON objects decode to
    # dict, integers to int; a bool is not a count) and the two known pairs spelt out.
    get = node.get
    d = get("items_done")
    if type(d) is int:
        t = get("items_total")
        if type(t) is int and d >= 0 and t >= 0:
            return (d if d < t else t, t)
    d = get("done")
    if type(d) is int:
        t = get("total")
        if type(t) is int and d >= 0 and t >= 0:
            return (d if d < t else t, t)
    if not depth:
        return None
    done = total = 0
    found = False
    for value in node.values():
        if type(value) is dict:
            counts = _count(value, depth - 1)
            if counts is not None:
                done += counts[0]
                total += counts[1]
                found = True
    return (done, total) if found else None


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # RFC 3339 without offset: the publisher writes UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class TaskState:
    """What the board knows of one task."""

    __slots__ = ("done", "first_seen", "gaps", "last_seen", "rate", "report", "seq", "total")

    def __init__(self, report: Report, now: float) -> None:
        self.report = report
        self.seq = report.seq  # the sequence so far (a report with seq 0 leaves it alone)
        self.first_seen = now
        self.last_seen = now
        self.gaps = 0  # reports never seen (missing seq numbers)
        self.rate: float | None = None  # items per second, smoothed
        counts = progress_counts(report.progress_report)
        self.done: int | None = counts[0] if counts else None
        self.total: int | None = counts[1] if counts else None

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
    def progress(self) -> float | None:
        """Done / total in 0..1 (1 for a finished task), or None when unknown."""
        if self.report.state == "finished":
            return 1.0
        if self.done is None or not self.total:
            return None
        return self.done / self.total

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
        """Seconds until done at the current rate, or None when unknown."""
        if self.finished or self.done is None or self.total is None or not self.rate:
            return None
        return max(self.total - self.done, 0) / self.rate


class Board:
    """Per-task state folded from reports, bounded in memory.

    Args:
        max_finished: finished tasks kept (the oldest finished are evicted first).
        max_tasks: tasks kept in all; beyond it the least recently updated go.
        max_seq_jump: a ``seq`` further than this from its task's last one is a jump (see
            above), not a gap.
    """

    def __init__(
        self, *, max_finished: int = 1_000, max_tasks: int = 10_000, max_seq_jump: int = 1_000_000
    ) -> None:
        self.max_finished = max_finished
        self.max_tasks = max_tasks
        self.max_seq_jump = max_seq_jump
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

    def apply(self, report: Report, now: float | None = None) -> TaskState | None:
        """Fold one report in; returns the task's state, or None when the report was stale
        or a repeat (and ignored).

        A report with ``seq`` 0 (not from a streamer publisher) always applies.
        """
        now = time.time() if now is None else now
        if report.sent_at:
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
            counts = _count(report.progress_report, _MAX_DEPTH)
            if counts is not None:
                done, total = counts
                last_done = task.done
                if last_done is not None and now > task.last_seen and done >= last_done:
                    sample = (done - last_done) / (now - task.last_seen)
                    rate = task.rate
                    task.rate = (
                        sample
                        if rate is None
                        else _RATE_SMOOTHING * sample + (1 - _RATE_SMOOTHING) * rate
                    )
                task.done, task.total = done, total
            task.report = report
            task.last_seen = now
            if seq:
                task.seq = seq
            if report.state != old_state:
                by_state[old_state] -= 1
                by_state[report.state] = by_state.get(report.state, 0) + 1
            tasks.move_to_end(task_id)
            if was_finished and report.state not in TERMINAL_STATES:
                self._finished.pop(task_id, None)
        self.reports += 1
        if report.state in TERMINAL_STATES:
            self._finished[task_id] = None
            self._finished.move_to_end(task_id)
            if len(self._finished) > self.max_finished:
                self._evict()
        if len(tasks) > self.max_tasks:
            self._evict()
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
        self.evicted += 1
        self._gaps -= task.gaps
        self._by_state[task.state] -= 1
