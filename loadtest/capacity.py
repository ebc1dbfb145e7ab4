"""Offered-rate plans (fixed, stepped, capacity search), their measurement and reports.

Three plans, as in RabbitMQ PerfTest: a fixed rate for the run time; a list of
``RATE:SECONDS`` steps; and the capacity search, which steps the offered rate up
(geometrically, by ``factor``) until a step fails a bound (confirm latency p99, the share of
reports not delivered, or the rate not being reached), then bisects between the highest
passing and the lowest failing rate ``refine`` times (a first step that fails makes it step
down instead, until one passes). Its result is the highest passing step: the
sustained reports/s and tasks/s with the confirm latency percentiles measured at that rate.

Every step is measured from process snapshots (see :mod:`loadtest.ledger`) taken after a
warm-up, so the figures are the steady state, not the ramp. Rates are summed per process over
each process's own snapshot times: workers report every few seconds, and this keeps their
reporting lag out of the rates.

Nothing here imports locust: the plans are plain objects the load shape drives.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

__all__ = [
    "Bound",
    "Bounds",
    "CapacitySearch",
    "Plan",
    "StepResult",
    "Steps",
    "measure",
    "parse_fail_on",
    "parse_steps",
    "table",
    "window",
    "write_reports",
]

QUANTILES: Final = (0.5, 0.9, 0.99, 0.999)  # and the max: the last non-empty bucket
_MIN_RATE: Final = 100.0  # the search gives up below this many reports/s
_RECHECKS: Final = 2  # bisections resumed after the best pass failed when run again


def parse_steps(text: str) -> list[tuple[float, float]]:
    """``"5000:30,10000:60"`` → ``[(5000.0, 30.0), (10000.0, 60.0)]`` (reports/s, seconds).

    Raises:
        ValueError: a step is not ``RATE:SECONDS`` with a rate >= 0 and seconds > 0.
    """
    steps = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        rate, sep, seconds = part.partition(":")
        try:
            r, s = float(rate), float(seconds)
        except ValueError:
            r = s = math.nan
        if not sep or not (math.isfinite(r) and r >= 0 and math.isfinite(s) and s > 0):
            raise ValueError(f"a rate step is RATE:SECONDS (e.g. 5000:30), got {part!r}")
        steps.append((r, s))
    if not steps:
        raise ValueError("no rate steps given")
    return steps


# --fail-on's names: the StepResult field each reads, and the kind of bound it takes.
_LATENCIES: Final = ("p50", "p90", "p99", "p99.9", "max")
_METRICS: Final = {
    **{name: (name.replace(".", ""), "latency") for name in _LATENCIES},
    **{f"e2e_{name}": (f"e2e_{name.replace('.', '')}", "latency") for name in _LATENCIES},
    "drop": ("drop_ratio", "ratio"),
    "reach": ("reach", "floor"),
}
_UNITS_MS: Final = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_OPS: Final = ("<=", ">=", "<", ">")


@dataclasses.dataclass(frozen=True)
class Bound:
    """One pass condition of a step, e.g. ``p99 < 50`` (latencies in ms, ratios as such).

    Attributes:
        metric: a ``--fail-on`` name (``p99``, ``e2e_p99.9``, ``drop``, ``reach``, ...).
        op: ``<``, ``<=``, ``>`` or ``>=``.
        limit: the value it is compared with.
    """

    metric: str
    op: str
    limit: float

    def holds(self, value: float) -> bool:
        op, limit = self.op, self.limit
        if op == "<":
            return value < limit
        if op == "<=":
            return value <= limit
        if op == ">":
            return value > limit
        return value >= limit

    def __str__(self) -> str:
        kind = _METRICS[self.metric][1]
        limit = f"{self.limit:g} ms" if kind == "latency" else f"{self.limit:g}"
        return f"{self.metric} {self.op} {limit}"


def parse_fail_on(text: str) -> list[Bound]:
    """``--fail-on``: comma-separated ``METRIC OP VALUE`` bounds a step must meet.

    Latencies (``p50 p90 p99 p99.9 max``, and ``e2e_``-prefixed for the watcher's end-to-end
    latency) take ``ms`` (the default), ``s`` or ``us`` and an upper bound; ``drop`` (the share
    of reports not delivered) takes a ratio or a percentage and an upper bound; ``reach``
    (confirmed / offered rate) a lower bound. E.g. ``p99<50ms,drop<0.1%,reach>0.95``.

    Raises:
        ValueError: naming the part that is not a bound, and why.
    """
    bounds = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        op = next((o for o in _OPS if o in part), None)
        if op is None:
            raise ValueError(f"--fail-on: {part!r} is not METRIC<VALUE or METRIC>VALUE")
        name, _, value = (x.strip() for x in part.partition(op))
        if name not in _METRICS:
            raise ValueError(
                f"--fail-on: unknown metric {name!r} in {part!r}; known: {', '.join(_METRICS)}"
            )
        kind = _METRICS[name][1]
        if (kind == "floor") != op.startswith(">"):
            want = ">" if kind == "floor" else "<"
            raise ValueError(f"--fail-on: {name} takes a {want} bound, got {part!r}")
        number, scale = value, 1.0
        if kind == "latency":
            unit = value.lstrip("0123456789.")
            number, scale = value[: len(value) - len(unit)], _UNITS_MS.get(unit.strip(), 0.0)
            if not scale:
                raise ValueError(f"--fail-on: unknown unit {unit!r} in {part!r} (ms, s or us)")
        elif value.endswith("%"):
            number, scale = value[:-1], 0.01
        try:
            limit = float(number) * scale
        except ValueError:
            raise ValueError(f"--fail-on: {value!r} in {part!r} is not a number") from None
        if not math.isfinite(limit) or limit < 0:
            raise ValueError(f"--fail-on: {part!r} needs a finite, non-negative value")
        bounds.append(Bound(name, op, limit))
    if not bounds:
        raise ValueError("--fail-on: no bound given (e.g. 'p99<50ms,drop<0.1%,reach>0.95')")
    return bounds


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bounds:
    """When a step fails.

    Attributes:
        p99_ms: confirm latency p99 above this.
        drop_ratio: (coalesced + dropped) / published above this.
        reach: confirmed rate below ``reach`` x the offered rate (the broker, or the load
            generator itself, did not keep up).
        fail_on: ``--fail-on``'s bounds; a metric named there replaces the default above.
    """

    p99_ms: float = 100.0
    drop_ratio: float = 0.001
    reach: float = 0.95
    fail_on: tuple[Bound, ...] = ()

    @property
    def checks(self) -> list[Bound]:
        """Every condition a step must meet."""
        named = {b.metric for b in self.fail_on}
        defaults = [
            Bound("p99", "<=", self.p99_ms),
            Bound("drop", "<=", self.drop_ratio),
            Bound("reach", ">=", self.reach),
        ]
        return [b for b in defaults if b.metric not in named] + list(self.fail_on)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepResult:
    """What one step measured (rates per second, latencies in ms)."""

    step: int
    offered: float
    published: float
    confirmed: float
    tasks: float
    drop_ratio: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    seconds: float
    e2e_p50: float | None = None
    e2e_p90: float | None = None
    e2e_p99: float | None = None
    e2e_p999: float | None = None
    e2e_max: float | None = None
    passed: bool = True
    why: str = ""

    @property
    def reach(self) -> float:
        """Confirmed / offered rate."""
        return self.confirmed / self.offered if self.offered else 1.0

    def judged(self, bounds: Bounds) -> StepResult:
        """This result, marked passed or failed (and why) against ``bounds``."""
        why = []
        for bound in bounds.checks:
            value = getattr(self, _METRICS[bound.metric][0])
            if value is None:
                why.append(f"{bound.metric} not measured (no watcher)")
            elif not bound.holds(value):
                kind = _METRICS[bound.metric][1]
                shown = f"{value:.2f} ms" if kind == "latency" else f"{value:.4f}"
                if kind == "floor":
                    shown += f" (confirmed {self.confirmed:,.0f}/s of {self.offered:,.0f}/s)"
                why.append(f"{bound.metric} {shown}, not {bound.op} {bound.limit:g}")
        return dataclasses.replace(self, passed=not why, why="; ".join(why))


def _quantiles(counts: Sequence[int], bounds_ms: Sequence[float]) -> list[float]:
    """p50, p90, p99, p99.9 and the max (ms, bucket upper bounds: within 2%)."""
    total = sum(counts)
    out = []
    for q in QUANTILES:
        value = 0.0
        if total:
            seen = 0
            for i, n in enumerate(counts):
                seen += n
                if n and seen >= q * total:
                    value = bounds_ms[i]
                    break
        out.append(value)
    top = max((i for i, n in enumerate(counts) if n), default=None)
    out.append(0.0 if top is None else bounds_ms[top])
    return out


def window(
    history: Mapping[str, Sequence[Mapping[str, Any]]], start: float, end: float
) -> dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Per process, the pair of snapshots that best covers ``start``..``end`` (Unix times).

    The later one is the last taken by ``end``; the earlier one the first taken from
    ``start`` on, or, if that leaves no interval (workers report only every few seconds),
    the last one taken before ``start``.
    """
    pairs = {}
    for pid, snaps in history.items():
        upto = [s for s in snaps if s["t"] <= end]
        if len(upto) < 2:
            continue
        b = upto[-1]
        after = [s for s in upto if s["t"] >= start and s["t"] < b["t"]]
        before = [s for s in upto if s["t"] < start]
        a = after[0] if after else before[-1] if before else None
        if a is not None and a["t"] < b["t"]:
            pairs[pid] = (a, b)
    return pairs


def measure(
    step: int,
    offered: float,
    pairs: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
    bounds_ms: Sequence[float],
    e2e_pair: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
) -> StepResult:
    """The step measured from a pair of snapshots per process (see :func:`window`).

    ``e2e_pair``: the watchers' snapshots at the end of the warm-up and at the end of the
    step.
    """
    published = confirmed = tasks = 0.0
    undelivered = sent = 0
    latency = [0] * len(bounds_ms)
    seconds = 0.0
    for a, b in pairs.values():
        dt = b["t"] - a["t"]
        if dt <= 0:
            continue
        seconds = max(seconds, dt)
        published += (b["published"] - a["published"]) / dt
        confirmed += (b["confirmed"] - a["confirmed"]) / dt
        tasks += (b["tasks_done"] - a["tasks_done"]) / dt
        sent += b["published"] - a["published"]
        undelivered += b["coalesced"] - a["coalesced"]
        undelivered += sum(b["dropped"].values()) - sum(a["dropped"].values())
        for i, (x, y) in enumerate(zip(a["latency"], b["latency"], strict=False)):
            latency[i] += y - x
    p50, p90, p99, p999, top = _quantiles(latency, bounds_ms)
    e2e: dict[str, float] = {}
    if e2e_pair is not None:
        a, b = e2e_pair
        diff = [y - x for x, y in zip(a["latency"], b["latency"], strict=False)]
        names = ("e2e_p50", "e2e_p90", "e2e_p99", "e2e_p999", "e2e_max")
        e2e = dict(zip(names, _quantiles(diff, bounds_ms), strict=True))
    return StepResult(
        step=step,
        offered=offered,
        published=published,
        confirmed=confirmed,
        tasks=tasks,
        drop_ratio=undelivered / sent if sent else 0.0,
        p50=p50,
        p90=p90,
        p99=p99,
        p999=p999,
        max=top,
        seconds=seconds,
        **e2e,
    )


class Plan:
    """A sequence of rate steps; :meth:`next` is asked for the following one."""

    name = "plan"
    step_time: float = 10.0
    warmup: float = 3.0
    cooldown: float = 0.0  # seconds at rate 0 after a failed step
    bounds: Bounds

    def first(self) -> tuple[float, float] | None:
        """The first step as (reports/s, seconds), or None for no step at all."""
        return self.next(None)

    def next(self, result: StepResult | None) -> tuple[float, float] | None:
        raise NotImplementedError

    @property
    def results(self) -> list[StepResult]:
        return self._results

    _results: list[StepResult]

    def summary(self) -> dict[str, Any]:
        return {"plan": self.name, "steps": [dataclasses.asdict(r) for r in self._results]}


class Steps(Plan):
    """Fixed steps: ``[(rate, seconds), ...]``; a fixed rate is one step.

    ``seconds`` may be ``math.inf`` (a fixed rate with no run time: until stopped).
    """

    name = "steps"

    def __init__(
        self, steps: Sequence[tuple[float, float]], *, warmup: float = 3.0, bounds: Bounds
    ) -> None:
        self.steps = list(steps)
        self.warmup = warmup
        self.bounds = bounds
        self._results = []
        self._index = -1

    def next(self, result: StepResult | None) -> tuple[float, float] | None:
        if result is not None:
            self._results.append(result.judged(self.bounds))
        self._index += 1
        return self.steps[self._index] if self._index < len(self.steps) else None


class CapacitySearch(Plan):
    """Step the rate up by ``factor`` until a step fails, then bisect ``refine`` times.

    If the very first step fails, the rate steps down by ``factor`` until one passes, and
    the bisection then runs between that and the lowest failure. With ``retry``, a failing
    step is run once more at the same rate and counts as failed only if it fails again: on a
    shared machine one noisy step would otherwise cap the result. And the other way round:
    the highest passing rate is run once more at the end, and stands only if it passes
    again, so that one lucky step near the edge does not set the result either. When it
    fails, it becomes the lowest failure and the bisection goes on between it and the next
    highest pass (``refine`` steps, at most ``_RECHECKS`` times), instead of falling back a
    whole growth step; with no other pass, the rate steps down from it as from a failed
    start. All three make two searches in a row agree.

    Args:
        start: first offered rate, reports/s.
        factor: growth per step while every step passes (> 1).
        max_rate: never offer more than this (the search ends there if it still passes).
        step_time, warmup: seconds per step, of which the first ``warmup`` are not measured.
        refine: bisection steps between the last pass and the first failure.
        retry: repeat a failing step once before believing it.
        cooldown: seconds at rate 0 after a failed step: an overloaded broker is left with
            a backlog (queued reports, a lagging reader, memory to collect) that would
            otherwise count against the next step.
        bounds: what makes a step fail.
    """

    name = "capacity"

    def __init__(
        self,
        *,
        start: float = 5000.0,
        factor: float = 1.25,
        max_rate: float = 1e6,
        step_time: float = 10.0,
        warmup: float = 3.0,
        refine: int = 2,
        retry: bool = True,
        cooldown: float = 0.0,
        bounds: Bounds,
    ) -> None:
        if start <= 0 or factor <= 1 or max_rate < start:
            raise ValueError("capacity search needs start > 0, factor > 1, max_rate >= start")
        if not 0 <= warmup < step_time:
            raise ValueError("warm-up must be shorter than a step")
        self.start, self.factor, self.max_rate = start, factor, max_rate
        self.step_time, self.warmup, self.refine = step_time, warmup, refine
        self.bounds = bounds
        self.retry = retry
        self.cooldown = cooldown
        self._results = []
        self._retried: float | None = None  # the rate being repeated after a failure
        self._passed: float | None = None
        self._failed: float | None = None
        self._refined = 0
        self._confirming: float | None = None  # the best pass, being run again
        self._rejected: set[float] = set()  # passes that failed when run again
        self._rechecks = 0

    def next(self, result: StepResult | None) -> tuple[float, float] | None:
        if result is None:
            return (self.start, self.step_time)
        result = result.judged(self.bounds)
        if self._confirming is not None:
            self._results.append(result)
            if result.passed:
                return None
            rejected, self._confirming = self._confirming, None
            self._rejected.add(rejected)
            self._failed = min(self._failed or math.inf, rejected)
            if self._rechecks >= _RECHECKS:
                return self._confirm()
            self._rechecks += 1
            best = self.best
            if best is None:  # nothing else passed: step down below it, as from a failed start
                self._passed, self._refined = None, 0
                lower = rejected / self.factor
                return (lower, self.step_time) if lower >= _MIN_RATE else None
            if not self.refine:
                return self._confirm()
            self._passed, self._refined = best.offered, 1
            return ((self._passed + self._failed) / 2, self.step_time)
        following = self._search(result)
        return following if following is not None or not self.retry else self._confirm()

    def _confirm(self) -> tuple[float, float] | None:
        """Run the best pass once more (None when there is none left to try)."""
        best = self.best
        self._confirming = None if best is None else best.offered
        return None if best is None else (best.offered, self.step_time)

    def _search(self, result: StepResult) -> tuple[float, float] | None:
        """The growing, stepping down and bisecting part: the next step, or None."""
        if not result.passed and self.retry and self._retried != result.offered:
            self._retried = result.offered
            self._results.append(dataclasses.replace(result, why=f"{result.why} (repeating)"))
            return (result.offered, self.step_time)
        self._retried = None
        self._results.append(result)
        if result.passed:
            self._passed = max(self._passed or 0.0, result.offered)
        else:
            self._failed = min(self._failed or math.inf, result.offered)
        if self._failed is None:
            if result.offered >= self.max_rate:
                return None
            return (min(result.offered * self.factor, self.max_rate), self.step_time)
        if self._passed is None:  # even the first rate failed: step down until one passes
            lower = result.offered / self.factor
            return (lower, self.step_time) if lower >= _MIN_RATE else None
        if self._refined >= self.refine:
            return None
        self._refined += 1
        return ((self._passed + self._failed) / 2, self.step_time)

    @property
    def best(self) -> StepResult | None:
        """The passing step with the highest offered rate (its last run), leaving out a rate
        that failed when it was run again."""
        passed = [r for r in self._results if r.passed and r.offered not in self._rejected]
        return max(reversed(passed), key=lambda r: r.offered) if passed else None

    def summary(self) -> dict[str, Any]:
        best = self.best
        return {
            **super().summary(),
            "bounds": [str(b) for b in self.bounds.checks],
            "result": None if best is None else dataclasses.asdict(best),
        }


def table(results: Sequence[StepResult]) -> list[str]:
    """The steps as console lines."""
    head = (
        f"{'step':>4} {'offered/s':>10} {'published/s':>12} {'confirmed/s':>12} "
        f"{'tasks/s':>8} {'drop':>7} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} "
        f"{'max':>7} {'e2e p99':>8} {'e2e max':>8}  verdict"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        e2e = "-" if r.e2e_p99 is None else f"{r.e2e_p99:.1f}"
        e2e_max = "-" if r.e2e_max is None else f"{r.e2e_max:.1f}"
        lines.append(
            f"{r.step:>4} {r.offered:>10,.0f} {r.published:>12,.0f} {r.confirmed:>12,.0f} "
            f"{r.tasks:>8,.1f} {r.drop_ratio:>7.4f} {r.p50:>7.2f} {r.p90:>7.2f} {r.p99:>7.2f} "
            f"{r.p999:>7.2f} {r.max:>7.1f} {e2e:>8} {e2e_max:>8}  "
            f"{'pass' if r.passed else 'FAIL: ' + r.why}"
        )
    return lines


def write_reports(prefix: str, summary: Mapping[str, Any]) -> list[Path]:
    """``<prefix>_capacity.csv`` (one row per step) and ``<prefix>_capacity.json``."""
    csv_path, json_path = Path(f"{prefix}_capacity.csv"), Path(f"{prefix}_capacity.json")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    fields = [f.name for f in dataclasses.fields(StepResult)]
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in summary["steps"]:
            writer.writerow(row)
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    return [csv_path, json_path]
