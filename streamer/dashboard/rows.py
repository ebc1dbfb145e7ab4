"""What the dashboard sends: a task's row, the header summary, an event batch, a history entry.

The JSON shapes of ``/api/tasks`` and of the event stream; the page's scripts read exactly
these names, so they change only together with ``static/``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ..amqp import Status
from ..board import Board, TaskState
from ..family import Rollup
from ..view import error_text

__all__ = [
    "Batch",
    "ConnectionRow",
    "Entry",
    "FamilyRow",
    "Row",
    "StepRow",
    "Summary",
    "encode",
]

_ERROR_TEXT: Final = 200  # characters of an error description shown in a row
_MAX_CHILDREN: Final = 100  # children listed in a row (the rest are in the family's counts)

encode: Final = msgspec.json.Encoder().encode


class StepRow(msgspec.Struct, frozen=True, array_like=True):
    """One step of a task (``[name, state, done, total]`` on the wire)."""

    name: str
    state: str | None
    done: int | None
    total: int | None


class FamilyRow(msgspec.Struct, frozen=True, kw_only=True):
    """A family or a group rolled up (see :class:`streamer.family.Rollup`)."""

    members: int
    progress: float
    states: dict[str, int]
    eta: float | None
    text: str

    @classmethod
    def of(cls, rollup: Rollup) -> FamilyRow:
        return cls(
            members=rollup.members,
            progress=rollup.progress,
            states=rollup.states,
            eta=rollup.eta,
            text=rollup.text(),
        )


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One task as the page and ``/api/tasks`` see it (times are Unix seconds).

    ``progress`` is the overall progress in 0..1 (1 for a finished task; never lower than
    before unless ``grew``), ``rate`` items per second (a finished task's average), ``eta``
    seconds; each is None when unknown. ``end`` is None while the task is active. ``stalled``:
    active but silent beyond the board's bound. ``steps``: ``[name, state, done, total]``.
    ``parent``: the task that spawned it (when seen); ``family``: it and its descendants
    rolled up, for a task that spawned others.
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
    stalled: bool = False
    grew: bool = False  # the work grew at the last report: the bar went back
    steps: list[StepRow] = []
    parent: str | None = None
    children: list[str] = []
    group: str | None = None
    family: FamilyRow | None = None  # with its descendants, when it spawned any

    @classmethod
    def of(cls, task: TaskState, board: Board, now: float) -> Row:
        report = task.report
        progress = task.progress_of()
        family = board.family(task, now)
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
            stalled=board.stalled(task, now),
            grew=progress.grew,
            parent=board.families.parent(task.task_id),
            children=report.spawned_tasks[:_MAX_CHILDREN],
            group=report.group_id,
            family=None if family is None else FamilyRow.of(family),
            steps=[
                StepRow(name=s.name, state=s.state, done=s.done, total=s.total)
                for s in progress.steps
            ],
        )


class ConnectionRow(msgspec.Struct, frozen=True, kw_only=True):
    """The broker connection as the page shows it ("broker unreachable since 12:03:04"):
    :class:`streamer.amqp.Status` on the wire.

    ``state``: connecting, connected, lost, unreachable, refused (credentials), untrusted
    (certificate) or stopped; ``since`` and ``retry_at`` are Unix seconds; ``attempts``:
    failed attempts since the last success; ``error``: the last one's reason.
    """

    state: str
    since: float
    url: str
    attempts: int = 0
    error: str | None = None
    retry_at: float | None = None

    @classmethod
    def of(cls, status: Status) -> ConnectionRow:
        return cls(
            state=status.phase.value,
            since=status.since,
            url=status.url,
            attempts=status.attempts,
            error=status.reason() or None,
            retry_at=status.retry_at,
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
    stalled: int = 0
    source: str = ""  # what it watches: broker (password masked), exchange, bindings
    replaying: float | None = None  # how much of the history is read (0..1); None: live
    history: str = ""  # the history it read first ("streamer.history from first"), if any
    connection: ConnectionRow | None = None  # the broker connection's state


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """One server-sent event: changed rows, rows gone from the board, the summary."""

    n: int
    now: float
    rows: list[Row]
    removed: list[str]
    summary: Summary


class Entry(msgspec.Struct, array_like=True, gc=False):
    """One run of reports in the same state and step, in a task's history: a task that sends
    400 ``running`` reports in two steps has two entries, not 400 identical lines (scalars
    only, so the garbage collector need not track the thousands kept).

    A state change starts an entry at once; a step change is noticed when the dashboard
    looks, once a second (progress is not read per report), and the task's next report
    starts an entry in the new step. The latest entry is updated in place as its run goes on,
    not replaced by a new one per report.
    """

    first: float  # when the first report of the run arrived
    at: float  # when its latest arrived
    first_seq: int
    seq: int  # the latest report's
    state: str
    reports: int
    sent_at: float  # the latest report's
    step: str = ""  # the step under way ("" when none is known yet)
