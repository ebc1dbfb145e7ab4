"""Helpers for testing code that publishes with streamer: capture reports, then assert on them.

A unit test of a task worker should not need a broker, yet it should still notice when the
worker sends a report streamer would refuse. So everything here records reports in memory
*after* the same validation the real publishers do (task id, state, serialisability, size):
bad input still raises :class:`~streamer.errors.InvalidReport` in the test.

Three ways in, from least to most intrusive for the code under test:

- :func:`capture` patches ``Publisher.publish`` and ``BackgroundPublisher.publish`` for the
  duration of a ``with`` block, so code that builds its own publisher needs no change;
- :class:`CapturingPublisher` is a stand-in with the ``BackgroundPublisher`` API, for code
  that takes its publisher as an argument;
- the ``streamer_capture`` pytest fixture is :func:`capture` for one test; enable it with
  ``pytest_plugins = ["streamer.testing"]`` in the top-level ``conftest.py``.

All three hand out a :class:`Captured`: the reports in publish order plus assertion helpers
whose failure messages say what was captured instead.

PYTEST_DONT_REWRITE: the marker tells pytest not to rewrite this module's asserts (it has none
to rewrite: its helpers build their own messages), so a conftest or test module may both
import from it and list it in ``pytest_plugins`` without an "already imported" warning.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from fractions import Fraction
from typing import ClassVar, Final, cast

from .embed import BackgroundPublisher
from .front import BlockingFront
from .publisher import Publisher
from .report import STATES, Report, check, decode, encode_stamped
from .routing import routing_key
from .settings import Settings
from .stats import DROP_REASONS, Stats

__all__ = ["Captured", "CapturingPublisher", "capture"]

# The classes whose ``publish`` capture() replaces, and the attribute it replaces (a name in a
# variable, so the patching reads as the plain setattr it is).
_PATCHED: Final = (Publisher, BackgroundPublisher)
_METHOD: Final = "publish"


def _encode_checked(report: object, settings: Settings, seq: int) -> bytes:
    """Check ``report`` as the real publishers do and return its stamped body (same checks,
    same messages: a test must fail exactly where production would)."""
    check(report)
    checked = cast(Report, report)
    routing_key(checked.task_id, settings.routing_prefix)
    return encode_stamped(checked, seq, time.time(), settings.max_body)


def _runs(states: Iterable[str]) -> str:
    """``waiting, running ×400, finished``: a long state sequence that still fits a line."""
    parts = []
    for state, group in itertools.groupby(states):
        count = sum(1 for _ in group)
        parts.append(state if count == 1 else f"{state} ×{count}")
    return ", ".join(parts) or "(none)"


def _ratio(entry: object) -> tuple[Fraction, int | float, int | float] | None:
    """A progress entry's ``items_done / items_total`` (exact), or None if it has no ratio."""
    if not isinstance(entry, dict):
        return None
    done, total = entry.get("items_done"), entry.get("items_total")
    if isinstance(done, bool) or isinstance(total, bool):
        return None
    if not isinstance(done, int | float) or not isinstance(total, int | float) or total <= 0:
        return None  # no numbers, or nothing to do (or not known yet): nothing to compare
    return Fraction(done) / Fraction(total), done, total


class Captured:
    """The reports captured so far, in publish order, with assertions about them.

    Each report is stored as a consumer would decode it from the wire (so a tuple in
    ``progress_report`` reads back as a list, and later changes to the caller's dicts do not
    leak in), with ``seq`` counting 1, 2, 3, ... per task and ``sent_at`` set, like the real
    publisher. Safe to publish into from any number of threads.

    The ``assert_*`` helpers raise :class:`AssertionError` with a message that shows what was
    captured, so a failing test explains itself without a debugger.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: list[Report] = []
        self._seq: dict[str, int] = {}

    def _record(self, report: Report, settings: Settings) -> Report:
        """Validate, stamp and keep one report; what a real ``publish()`` would send."""
        if type(report) is not Report:
            _encode_checked(report, settings, 1)  # raises InvalidReport naming the type
        with self._lock:  # seq, stamp and append together: list order == seq order per task
            seq = self._seq.get(report.task_id, 0) + 1
            body = _encode_checked(report, settings, seq)
            self._seq[report.task_id] = seq  # only a valid report uses up a seq, as for real
            sent = decode(body)
            self._reports.append(sent)
        return sent

    # -- reading ----------------------------------------------------------------------------------

    @property
    def reports(self) -> list[Report]:
        """Every captured report in publish order (a copy: safe to keep or modify)."""
        with self._lock:
            return list(self._reports)

    @property
    def task_ids(self) -> list[str]:
        """The tasks that published, in the order their first report was captured."""
        return list(dict.fromkeys(r.task_id for r in self.reports))

    def for_task(self, task_id: str) -> list[Report]:
        """One task's reports in publish order; empty if it published none."""
        return [r for r in self.reports if r.task_id == task_id]

    def states(self, task_id: str) -> list[str]:
        """One task's states in publish order, e.g. ``["running", "running", "finished"]``."""
        return [r.state for r in self.for_task(task_id)]

    def last(self, task_id: str) -> Report:
        """The latest report of a task.

        Raises:
            AssertionError: the task published nothing; the message lists the tasks that did.
        """
        reports = self.for_task(task_id)
        if not reports:
            raise AssertionError(self._missing(task_id))
        return reports[-1]

    def clear(self) -> None:
        """Forget the reports captured so far (to assert on a later phase alone).

        Sequence numbers keep counting, as a real publisher's would: a task's next report
        still gets a ``seq`` above the ones forgotten.
        """
        with self._lock:
            self._reports.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._reports)

    def __iter__(self) -> Iterator[Report]:
        return iter(self.reports)

    def __repr__(self) -> str:
        reports = self.reports
        tasks = len({r.task_id for r in reports})
        return f"<Captured {len(reports)} reports of {tasks} tasks>"

    # -- asserting ----------------------------------------------------------------------------

    def assert_states(self, task_id: str, expected: Iterable[str]) -> None:
        """Assert a task published exactly these states, in this order.

        Raises:
            AssertionError: with a diff (``-`` expected only, ``+`` captured only).
        """
        expected = list(expected)
        actual = self.states(task_id)
        if actual == expected:
            return
        if not actual:
            raise AssertionError(f"{self._missing(task_id)}; expected states: {_runs(expected)}")
        diff = difflib.unified_diff(expected, actual, "expected", "captured", lineterm="", n=2)
        raise AssertionError(
            f"states of task {task_id!r} differ (- expected, + captured):\n"
            + "\n".join(diff)
            + f"\nexpected: {_runs(expected)}\ncaptured: {_runs(actual)}"
        )

    def assert_final(self, task_id: str, state: str) -> None:
        """Assert the latest report of a task has ``state`` (how the task ended, usually).

        Raises:
            AssertionError: the task is missing or its latest state differs; an ``error``
                report's code and description are shown.
        """
        last = self.last(task_id)
        if last.state == state:
            return
        message = (
            f"task {task_id!r} ended in state {last.state!r} (seq {last.seq}), expected "
            f"{state!r}; its states: {_runs(self.states(task_id))}"
        )
        if last.error is not None:
            message += f"\nerror: {last.error.code}: {last.error.description}"
        if state not in STATES:
            message += f"\nnote: {state!r} is not a state; states are {', '.join(sorted(STATES))}"
        raise AssertionError(message)

    def assert_progress(self, task_id: str) -> None:
        """Assert no step's progress ever went backwards across a task's reports.

        Progress is ``items_done / items_total`` of each ``progress_report`` entry that carries
        both (with a positive total); entries without them are not checked. A step whose total
        grows so that the ratio falls counts as going backwards: consumers draw a bar from it.

        Raises:
            AssertionError: the task is missing, or a ratio decreased; names the step and the
                two reports.
        """
        reports = self.for_task(task_id)
        if not reports:
            raise AssertionError(self._missing(task_id))
        seen: dict[str, tuple[Fraction, int | float, int | float, int]] = {}
        for report in reports:
            for step, entry in report.progress_report.items():
                ratio = _ratio(entry)
                if ratio is None:
                    continue
                value, done, total = ratio
                before = seen.get(step)
                if before is not None and value < before[0]:
                    _, done0, total0, seq0 = before
                    raise AssertionError(
                        f"progress of task {task_id!r} went backwards in step {step!r}: "
                        f"{done}/{total} ({float(value):.0%}) in the report with seq "
                        f"{report.seq}, after {done0}/{total0} ({float(before[0]):.0%}) in "
                        f"seq {seq0}"
                    )
                seen[step] = (value, done, total, report.seq)

    def _missing(self, task_id: str) -> str:
        known = self.task_ids
        if not known:
            return f"no report of task {task_id!r} was captured: nothing was published at all"
        return (
            f"no report of task {task_id!r} was captured; tasks captured: "
            f"{', '.join(repr(t) for t in known)}"
        )


def _capturing(captured: Captured, original: Callable[..., None]) -> Callable[..., None]:
    """A ``publish`` method that records into ``captured`` instead of sending anything."""

    @functools.wraps(original)
    def publish(self: Publisher | BackgroundPublisher, report: Report) -> None:
        captured._record(report, self.settings)

    return publish


@contextmanager
def capture() -> Iterator[Captured]:
    """Record every report published while the block runs, instead of sending it.

    Every ``Publisher.publish`` and ``BackgroundPublisher.publish`` call, on any instance and
    from any thread, validates the report as usual (bad input raises
    :class:`~streamer.errors.InvalidReport`) and then records it. Nothing connects and no
    thread starts: a ``Publisher`` need not be started, a ``BackgroundPublisher`` stays idle.
    The originals are back when the block ends, however it ends; an inner ``capture()``
    records on its own and hands back to the outer one.

    Only calls that look ``publish`` up while the block runs are captured: a bound method
    taken earlier (``send = pub.publish``, a ``pub.task(...)`` made before the block) still
    goes to the real publisher. The publishers' ``stats`` do not count captured reports.

    Example::

        with capture() as captured:
            run_sync(repo_id="zoo")          # builds its own BackgroundPublisher
        captured.assert_final("sync-zoo", "finished")
    """
    captured = Captured()
    saved = [(cls, cls.__dict__[_METHOD]) for cls in _PATCHED]
    try:
        for cls, original in saved:
            setattr(cls, _METHOD, _capturing(captured, original))
        yield captured
    finally:
        for cls, original in saved:
            setattr(cls, _METHOD, original)


class CapturingPublisher(BlockingFront):
    """A stand-in for :class:`~streamer.BackgroundPublisher` that records into ``captured``.

    For code that takes its publisher as an argument: pass one of these in tests. It takes
    the same options and validates them the same way (an unknown option raises
    :class:`~streamer.errors.ConfigError`), but ignores ``STREAMER_*`` variables so a
    developer's environment cannot change a test, and it never touches the network.

    After :meth:`close`, reports are validated and then dropped and counted (reason
    ``closed``), as the real one does; they are not captured.
    """

    # STREAMER_* variables must not change a test.
    _env: ClassVar[Mapping[str, str] | None] = {}

    def _setup(self) -> None:
        self.captured = Captured()
        self._lock = threading.Lock()
        self._published = 0
        self._dropped = 0
        self._closed = False

    def publish(self, report: Report) -> None:
        """Validate and record a report (from any thread), as ``BackgroundPublisher`` would.

        Raises:
            InvalidReport: bad task id or state, unserialisable or oversized report.
        """
        if self._closed:
            _encode_checked(report, self.settings, 1)
            with self._lock:
                self._dropped += 1
            return
        self.captured._record(report, self.settings)
        with self._lock:
            self._published += 1

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing is ever pending: returns True at once."""
        return True

    def close(self, timeout: float | None = None) -> None:
        """Stop recording; later reports are dropped and counted. Idempotent."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (to check the code under test closes it)."""
        return self._closed

    @property
    def stats(self) -> Stats:
        """Every captured report counts as published and confirmed; nothing is pending."""
        with self._lock:
            published, dropped = self._published, self._dropped
        by_reason = dict.fromkeys(DROP_REASONS, 0)
        by_reason["closed"] = dropped
        return Stats(
            published=published + dropped,
            confirmed=published,
            dropped=dropped,
            dropped_by_reason=by_reason,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "capturing"
        return f"<CapturingPublisher {state}, {len(self.captured)} reports captured>"


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional: only the fixture needs it
    pass
else:

    @pytest.fixture
    def streamer_capture() -> Iterator[Captured]:
        """The :class:`Captured` of a :func:`capture` block that spans the test.

        Enable with ``pytest_plugins = ["streamer.testing"]`` in the top-level conftest.
        """
        with capture() as captured:
            yield captured
