"""A task's progress as a view shows it: per step, overall, and a bar that never goes back.

A Pulp-shaped ``progress_report`` holds one object per step (``{"metadata": {...},
"content": {...}}``, possibly one level deeper under an importer's name), each with a
``state`` and counters (``items_done``/``items_total``, or ``done``/``total``).

Summing every counter (what a naive view does) makes the bar jump back whenever a step
starts: its total joins the sum, so a sync shows 100% → 11% → 100% → 69%. And counters of
different units (items, bytes) cannot be added at all. Here each step weighs the same: overall
progress is the mean of the steps' fractions (a finished step counts 1, one not started or
without a total 0). Steps declared ahead (``pub.task(id, steps=[...])`` lists them all as not
started) weigh from the first report, so the bar is right from the start.

What is shown never decreases: a lower value is kept at the last one shown, unless the work
grew (a step appeared that was not declared, or a step's total rose); then the lower value
is shown and :attr:`Progress.grew` says why. The ETA comes from a smoothed rate of the overall
fraction; it is None (unknown), never 0, while work remains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

__all__ = ["Progress", "Step", "current_step", "steps_of"]

#: Step states that mean the step's work is all done (Pulp 2 and 3 spellings, any case).
DONE_STATES: Final = frozenset({"finished", "completed", "complete", "done", "skipped"})
_MAX_DEPTH: Final = 3  # levels searched for steps (Pulp 2 nests steps under an importer)
_SMOOTHING: Final = 0.3  # weight of the newest rate sample
_MIN_ETA: Final = 1.0  # seconds: work remains, so the ETA is never shown as 0


class Step(NamedTuple):
    """One step of a task as its latest report describes it."""

    name: str
    state: str | None
    done: int | None
    total: int | None

    @property
    def fraction(self) -> float:
        """Share of this step done, 0..1 (a finished step 1; no total known: 0)."""
        if self.state is not None and self.state.lower() in DONE_STATES:
            return 1.0
        if self.done is None or not self.total:
            return 0.0
        return min(self.done / self.total, 1.0)

    @property
    def finished(self) -> bool:
        return self.fraction >= 1.0


def _counts(node: Mapping[str, Any]) -> tuple[int | None, int | None]:
    # Exact types: JSON integers decode to int; a bool is not a count.
    done = node.get("items_done")
    total = node.get("items_total")
    if type(done) is not int or type(total) is not int:
        done, total = node.get("done"), node.get("total")
    done = done if type(done) is int and done >= 0 else None
    total = total if type(total) is int and total >= 0 else None
    if done is not None and total is not None and done > total:
        done = total
    return done, total


def _is_step(node: Mapping[str, Any]) -> bool:
    return "state" in node or "items_total" in node or "total" in node or "done" in node


def steps_of(progress: Mapping[str, Any], prefix: str = "", depth: int = _MAX_DEPTH) -> list[Step]:
    """The steps of a ``progress_report``, in its order (nested names joined with ``/``).

    A report whose ``progress_report`` is itself one step (counters at the top) has one
    step named ``""``.
    """
    if not prefix:
        done, total = _counts(progress)
        if done is not None and total is not None:
            return [Step("", None, done, total)]
    steps: list[Step] = []
    for name, node in progress.items():
        if type(node) is not dict:
            continue
        full = f"{prefix}/{name}" if prefix else name
        if _is_step(node):
            state = node.get("state")
            done, total = _counts(node)
            steps.append(Step(full, state if type(state) is str else None, done, total))
        elif depth > 1:
            steps.extend(steps_of(node, full, depth - 1))
    return steps


class Progress:
    """One task's progress as shown, fed its reports' ``progress_report`` as they come (a
    view may skip some: it reads the latest when it draws).

    Attributes:
        steps: the steps of the latest report read.
        fraction: overall progress shown, 0..1; never lower than before unless ``grew``.
        grew: the work grew at the last read (a new step, a larger total): the bar went back.
        done, total: items over all steps that count them (None when none does).
        rate: items per second, smoothed (None until two reads a moment apart).
    """

    __slots__ = ("_at", "_speed", "done", "fraction", "grew", "rate", "steps", "total")

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.fraction = 0.0
        self.grew = False
        self.done: int | None = None
        self.total: int | None = None
        self.rate: float | None = None
        self._speed: float | None = None  # overall fraction per second, smoothed
        self._at: float | None = None

    def update(self, progress: Mapping[str, Any], at: float) -> None:
        """Read the progress of a report that arrived at ``at`` (seconds)."""
        steps = steps_of(progress)
        before = {step.name: step.total for step in self.steps}
        grew = bool(before) and any(
            step.name not in before or (step.total or 0) > (before[step.name] or 0)
            for step in steps
        )
        fraction = sum(step.fraction for step in steps) / len(steps) if steps else 0.0
        counted = [step for step in steps if step.total is not None]
        done = sum(step.done or 0 for step in counted) if counted else None
        total = sum(step.total or 0 for step in counted) if counted else None
        last_at, elapsed = self._at, (at - self._at) if self._at is not None else 0.0
        if last_at is not None and elapsed > 0:
            if done is not None and self.done is not None and done >= self.done:
                self.rate = _smooth(self.rate, (done - self.done) / elapsed)
            if not grew and fraction >= self.fraction:
                self._speed = _smooth(self._speed, (fraction - self.fraction) / elapsed)
        self.grew = grew
        self.fraction = fraction if grew else max(fraction, self.fraction)
        self.steps, self.done, self.total, self._at = steps, done, total, at

    @property
    def current(self) -> Step | None:
        """The first step not finished (the one under way), or None when all are."""
        return next((step for step in self.steps if not step.finished), None)

    def eta(self) -> float | None:
        """Seconds until done at the smoothed rate; None when unknown (never 0 while work
        remains)."""
        remaining = 1.0 - self.fraction
        if remaining <= 0 or not self._speed:
            return None
        return max(remaining / self._speed, _MIN_ETA)


def _smooth(old: float | None, sample: float) -> float:
    return sample if old is None else _SMOOTHING * sample + (1 - _SMOOTHING) * old


def current_step(progress: Mapping[str, Any]) -> str:
    """The name of the first step not finished in a ``progress_report`` ("" when all are,
    or it has none): what :attr:`Progress.current` names, without the rest of a read."""
    return next((step.name for step in steps_of(progress) if not step.finished), "")
