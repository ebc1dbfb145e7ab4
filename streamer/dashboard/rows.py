"""What the dashboard sends: a task's row, the header summary, an event batch, a history entry.

The JSON shapes of ``/api/tasks`` and of the event stream; the page's scripts read exactly
these names, so they change only together with ``static/``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ..board import TaskState
from ..view import error_text

__all__ = ["Batch", "Entry", "Row", "Summary", "encode"]

_ERROR_TEXT: Final = 200  # characters of an error description shown in a row

encode: Final = msgspec.json.Encoder().encode


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One task as the page and ``/api/tasks`` see it (times are Unix seconds).

    ``progress`` is done/total in 0..1 (1 for a finished task), ``rate`` items per second,
    ``eta`` seconds; each is None when unknown. ``end`` is None while the task is active.
    """

    id: str
    type: str | None
    state: str
    done: int | None
    total: int | None
    progress: float | None
    rate: float | None
    eta: float | None
    start: float
    end: float | None
    seen: float
    worker: str | None
    tags: list[str]
    seq: int
    gaps: int
    error: str | None

    @classmethod
    def of(cls, task: TaskState) -> Row:
        report = task.report
        return cls(
            id=task.task_id,
            type=report.task_type,
            state=task.state,
            done=task.done,
            total=task.total,
            progress=task.progress,
            rate=task.rate,
            eta=task.eta,
            start=task.started,
            end=task.ended,
            seen=task.last_seen,
            worker=report.worker_name,
            tags=report.tags,
            seq=report.seq,
            gaps=task.gaps,
            error=error_text(report, _ERROR_TEXT),
        )


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """The header line: what the board holds and how the stream is doing."""

    tasks: int
    by_state: dict[str, int]
    received: int
    rate: float
    malformed: int
    gaps: int
    ignored: int
    evicted: int
    consuming: bool


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """One server-sent event: changed rows, rows gone from the board, the summary."""

    n: int
    now: float
    rows: list[Row]
    removed: list[str]
    summary: Summary


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One report in a task's recent history (small on purpose: thousands are kept; scalars
    only, so the garbage collector need not track them)."""

    at: float  # when it arrived
    seq: int
    state: str
    done: int | None
    total: int | None
    sent_at: float
