"""The Task Report: what one status update of a task looks like on the wire.

Fields follow Pulp 2's Task Report so existing consumers feel at home; streamer adds
``seq`` (per-task sequence number, assigned by the publisher: 1, 2, 3, ... so consumers can
spot gaps and ignore stale reports) and ``sent_at`` (Unix time in seconds when the report
was handed to the publisher, for end-to-end latency).

Schema evolution follows msgspec's rules: new fields get defaults, a field is never retyped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from .errors import InvalidReport

__all__ = [
    "STATES",
    "TERMINAL_STATES",
    "Report",
    "State",
    "TaskError",
    "decode",
    "encode",
    "encode_unsequenced",
]

State = Literal[
    "waiting", "accepted", "running", "suspended", "skipped", "finished", "error", "canceled"
]
STATES: Final = frozenset(State.__args__)  # type: ignore[attr-defined]
TERMINAL_STATES: Final = frozenset({"skipped", "finished", "error", "canceled"})


class TaskError(msgspec.Struct, frozen=True, kw_only=True):
    """Why a task failed (Pulp's error object); ``sub_errors`` nest for batch failures."""

    code: str
    description: str = ""
    data: dict[str, Any] = {}
    sub_errors: list[TaskError] = []


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """One status update of one task.

    Build it in the worker and hand it to ``Publisher.publish``; ``seq`` and ``sent_at`` are
    filled in by the publisher, whatever the caller puts there.
    """

    task_id: str
    state: State
    task_type: str | None = None
    progress_report: dict[str, Any] = {}
    result: Any = None
    error: TaskError | None = None
    spawned_tasks: list[str] = []
    tags: list[str] = []
    worker_name: str | None = None
    queue: str | None = None
    group_id: str | None = None
    start_time: datetime | None = None
    finish_time: datetime | None = None
    seq: int = 0
    sent_at: float = 0.0

    @property
    def terminal(self) -> bool:
        """True when no report of this task should ever supersede this one."""
        return self.state in TERMINAL_STATES


def refuse(report: object) -> None:
    """Raise the :class:`InvalidReport` that says why ``report`` cannot be published.

    Publishers check the cheap conditions inline on their hot path and call this to
    word the error (its checks: a ``Report``, with a string task id and a known state).
    """
    if type(report) is not Report:
        raise InvalidReport(f"publish() takes a streamer.Report, got {type(report).__name__}")
    if not isinstance(report.task_id, str):
        raise InvalidReport(f"task_id must be a string, got {type(report.task_id).__name__}")
    if not isinstance(report.state, str) or report.state not in STATES:
        raise InvalidReport(
            f"unknown state {report.state!r} for task {report.task_id!r}; "
            f"expected one of {', '.join(sorted(STATES))}"
        )


def refuse_size(report: Report, size: int, limit: int) -> None:
    """Raise :class:`InvalidReport` for a report whose encoded body exceeds ``max_body``."""
    raise InvalidReport(
        f"report of task {report.task_id!r} is {size} bytes encoded; the limit "
        f"(max_body) is {limit}"
    )


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Report)
# The encoder's bound method, for hot paths that word their own errors (see encode()).
encode_raw: Final = _encoder.encode


def encode(report: Report) -> bytes:
    """Serialise a report to JSON bytes.

    Raises:
        InvalidReport: a free-form field (``progress_report``, ``result``, ``error.data``)
            holds a value JSON cannot carry.
    """
    try:
        return _encoder.encode(report)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidReport(
            f"report of task {report.task_id!r} is not serialisable: {exc}"
        ) from exc


_SEQ_MARK: Final = b',"seq":0,"sent_at":'


def encode_unsequenced(report: Report, sent_at: float) -> tuple[bytes, int]:
    """Encode ``report`` stamped with ``sent_at`` and ``seq`` 0, for a sequencer elsewhere.

    Returns:
        the body, and the offset of seq's single ``0`` digit: ``seq`` and ``sent_at`` are
        the last two fields, so the last occurrence of the mark is theirs, whatever strings
        the report carries.

    Raises:
        InvalidReport: the report is not serialisable.
    """
    body = encode(msgspec.structs.replace(report, seq=0, sent_at=sent_at))
    return body, body.rindex(_SEQ_MARK) + 7


def decode(body: bytes | memoryview) -> Report:
    """Parse and validate one JSON report body.

    Raises:
        msgspec.ValidationError: the JSON is well formed but not a Task Report.
        msgspec.DecodeError: the body is not JSON at all.
    """
    return _decoder.decode(body)
