"""The Task Report: what one status update of a task looks like on the wire.

Fields follow Pulp 2's Task Report so existing consumers feel at home; streamer adds
``seq`` (per-task sequence number, assigned by the publisher: 1, 2, 3, ... so consumers can
spot gaps and ignore stale reports) and ``sent_at`` (Unix time in seconds when the report
was handed to the publisher, or when it was due, for end-to-end latency).

Schema evolution follows msgspec's rules: new fields get defaults, a field is never retyped.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from .errors import InvalidReport

__all__ = [
    "MAX_SEQ",
    "STATES",
    "TERMINAL_STATES",
    "Received",
    "Report",
    "State",
    "TaskError",
    "check",
    "decode",
    "decode_received",
    "due_start",
    "encode",
    "encode_stamped",
    "progress_of",
]

State = Literal[
    "waiting", "accepted", "running", "suspended", "skipped", "finished", "error", "canceled"
]
STATES: Final = frozenset(State.__args__)  # type: ignore[attr-defined]
TERMINAL_STATES: Final = frozenset({"skipped", "finished", "error", "canceled"})
#: The largest ``seq`` a report may carry: 2**53 is where JSON readers that use doubles stop
#: being exact, and far beyond what a task sends. Beyond it (or below 0) a body is malformed.
MAX_SEQ: Final = 2**53


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
    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)] = 0
    sent_at: float = 0.0

    @property
    def terminal(self) -> bool:
        """True when no report of this task should ever supersede this one."""
        return self.state in TERMINAL_STATES


class Received(Report, frozen=True, kw_only=True, gc=False):
    """A report as the viewing tools (dashboard, watch, listen) read it: the steps of
    ``progress_report`` and the ``result`` stay the JSON text they came as
    (:class:`msgspec.Raw`) until someone reads them (:func:`progress_of`).

    Building the nested progress of every report was half of a view's decoding, yet a view
    reads the progress of a task's latest report only, a few times a second. The checks are
    the same (``progress_report`` must be an object), and re-encoded, a Received gives the
    same JSON as the Report it was sent as. (Not tracked by the garbage collector: decoded
    JSON cannot form a reference cycle.)
    """

    progress_report: dict[str, msgspec.Raw] = {}
    result: msgspec.Raw = msgspec.Raw(b"null")


def check(report: object) -> None:
    """Raise :class:`InvalidReport` unless ``report`` is a Report with a string task id and a
    known state: every publisher's first check, cheap enough for the hot path.
    """
    try:
        if (
            type(report) is not Report
            or type(report.task_id) is not str
            or (report.state not in STATES)
        ):
            refuse(report)
    except TypeError:  # an unhashable state
        refuse(report)
        raise


def refuse(report: object) -> None:
    """Raise the :class:`InvalidReport` that says why ``report`` cannot be published.

    :func:`check` calls this to word the error, only once a cheap test has failed.
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


def due_start(due: object) -> float:
    """``publish``'s ``due`` (a ``time.time()`` value) on the monotonic clock, where confirm
    latencies are timed; :class:`InvalidReport` saying what is wrong with it."""
    if isinstance(due, bool) or not isinstance(due, int | float) or not math.isfinite(due):
        raise InvalidReport(f"due must be a time.time() value in seconds, got {due!r}")
    return time.monotonic() - (time.time() - due)


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Report)
# The encoder's bound method, for encode_stamped (the hot path), which words its own errors.
_encode_raw: Final = _encoder.encode


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


_replace: Final = msgspec.structs.replace


def encode_stamped(report: Report, seq: int, sent_at: float, max_body: int) -> bytes:
    """Encode a checked ``report`` with its ``seq`` and ``sent_at``, as it goes on the wire.

    Raises:
        InvalidReport: the report is not serialisable, or larger than ``max_body`` encoded.
    """
    try:
        body = _encode_raw(_replace(report, seq=seq, sent_at=sent_at))
    except (TypeError, ValueError, OverflowError):
        encode(report)  # raises InvalidReport naming the problem
        raise
    if len(body) > max_body:
        raise InvalidReport(
            f"report of task {report.task_id!r} is {len(body)} bytes encoded; the limit "
            f"(max_body) is {max_body}"
        )
    return body


def decode(body: bytes | memoryview) -> Report:
    """Parse and validate one JSON report body.

    Raises:
        msgspec.ValidationError: the JSON is well formed but not a Task Report.
        msgspec.DecodeError: the body is not JSON at all.
    """
    return _decoder.decode(body)


#: :func:`decode` without the function around it, for receivers that decode every report.
decode_fast: Final = _decoder.decode

_received_decoder: Final = msgspec.json.Decoder(Received)
_value_decoder: Final = msgspec.json.Decoder()
#: :func:`decode` for the viewing tools: the same checks, the progress left undecoded.
decode_received: Final = _received_decoder.decode


def progress_of(report: Report) -> dict[str, Any]:
    """The report's ``progress_report``, its steps decoded now if it was :class:`Received`."""
    progress = report.progress_report
    if type(report) is Received:
        decode_value = _value_decoder.decode
        return {name: decode_value(raw) for name, raw in progress.items()}
    return progress
