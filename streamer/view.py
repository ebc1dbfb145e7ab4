"""What every view of the board shares (``watch``, the dashboard, the simulate summary): the
rate over a sliding window, the header counters, which rows to show, how an error reads.

Views redraw on a clock, never per report, so everything here is computed once per refresh.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from .board import Board, TaskState
from .report import Report

__all__ = [
    "MAX_ALERTS",
    "Counters",
    "RateWindow",
    "distinct_names",
    "error_text",
    "nest",
    "select_rows",
]

_RATE_WINDOW: Final = 1.0  # seconds over which a rate is measured
_SEPARATORS: Final = "-_.@:/ "
_MIN_SHARED: Final = 4  # a shared start shorter than this is not worth an ellipsis


class RateWindow:
    """Events per second over roughly the last ``window`` seconds, from samples of a count.

    Sampled once per refresh: a burst shows at once and a stop shows as a falling rate,
    which an average since the start would hide.
    """

    __slots__ = ("_samples", "window")

    def __init__(self, window: float = _RATE_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float, count: int) -> float:
        """Record ``count`` (a running total) at ``now``; return the recent rate."""
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[0][0] > self.window:
            samples.popleft()
        first_t, first_n = samples[0]
        return (count - first_n) / (now - first_t) if now > first_t else 0.0


@dataclass
class Counters:
    """What a view's header shows besides the board: deliveries, malformed ones, reports/s.

    ``rate`` is updated by :meth:`sample` (once per refresh, not per message).
    """

    received: int = 0
    malformed: int = 0
    rate: float = 0.0
    #: How much of the history has been replayed (0..1); None when live.
    replaying: float | None = None
    _window: RateWindow = field(default_factory=RateWindow, repr=False)

    def sample(self, now: float) -> None:
        """Recompute ``rate`` over roughly the last second of deliveries."""
        self.rate = self._window.sample(now, self.received)


#: Failed and stalled tasks shown at most, ahead of the row limit.
MAX_ALERTS: Final = 100


def select_rows(
    board: Board, max_rows: int, now: float
) -> tuple[list[TaskState], set[str], int, int]:
    """The rows a view shows: failed and stalled tasks first (they stay on screen beyond
    ``max_rows``, up to :data:`MAX_ALERTS`, most recent first), then other active tasks (most
    recently updated first), then finished ones, ``max_rows`` of those at most.

    Returns:
        the rows, the ids of the stalled ones among them, and how many active and finished
        tasks were left out.
    """
    alerts: list[TaskState] = []
    active: list[TaskState] = []
    finished: list[TaskState] = []
    stalled: set[str] = set()
    after = board.stall_after
    for task in board:
        if task.state == "error":
            alerts.append(task)
        elif task.stalled(now, after):
            alerts.append(task)
            stalled.add(task.task_id)
        else:
            (finished if task.finished else active).append(task)
    shown_alerts = heapq.nlargest(MAX_ALERTS, alerts, key=lambda t: t.last_seen)
    shown_active = heapq.nlargest(max_rows, active, key=lambda t: t.last_seen)
    room = max(max_rows - len(shown_active), 0)
    shown_finished = heapq.nlargest(room, finished, key=lambda t: t.last_seen)
    left_alerts = len(alerts) - len(shown_alerts)
    return (
        shown_alerts + shown_active + shown_finished,
        stalled,
        len(active) - len(shown_active) + left_alerts,
        len(finished) - len(shown_finished),
    )


def nest(
    rows: list[TaskState], parent_of: Callable[[str], str | None]
) -> list[tuple[TaskState, int]]:
    """``rows`` with each child moved under its parent (when the parent is among them), and
    how deep it sits: ``[(task, 0), (child, 1), ...]``; the order is otherwise kept."""
    shown = {task.task_id for task in rows}
    children: dict[str, list[TaskState]] = {}
    top: list[TaskState] = []
    for task in rows:
        parent = parent_of(task.task_id)
        if parent is not None and parent in shown and parent != task.task_id:
            children.setdefault(parent, []).append(task)
        else:
            top.append(task)
    out: list[tuple[TaskState, int]] = []
    placed: set[str] = set()

    def place(task: TaskState, depth: int) -> None:
        if task.task_id in placed:
            return  # a loop of parent links
        placed.add(task.task_id)
        out.append((task, depth))
        for child in children.get(task.task_id, ()):
            place(child, depth + 1)

    for task in top:
        place(task, 0)
    for task in rows:  # members of a loop with no top
        place(task, 0)
    return out


def distinct_names(names: list[str]) -> dict[str, str]:
    """Each name without the start all of them share (up to a separator), so that a column of
    ``reserved_resource_worker-1@host``, ``...-2@host`` shows what tells them apart."""
    if len(set(names)) < 2:
        return {name: name for name in names}
    common = len(os.path.commonprefix(names))  # noqa: RUF071 - characters, not paths
    while common and names[0][common - 1] not in _SEPARATORS:
        common -= 1  # cut after a separator, not inside a word
    if common < _MIN_SHARED:
        return {name: name for name in names}
    return {name: "…" + name[common:] for name in names}


def error_text(report: Report, limit: int | None = None) -> str | None:
    """``code: description`` of a failed task's error (cut to ``limit``), or None."""
    if report.error is None:
        return None
    text = f"{report.error.code}: {report.error.description}"
    return text if limit is None else text[:limit]
