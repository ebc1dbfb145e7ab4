"""Simulated Pulp-like task workers: repository syncs that spawn publishes.

A task goes waiting → accepted → running through named steps and then ends: a sync reads
``metadata``, downloads ``content`` (item and byte counts), imports ``errata`` and ``comps``;
a publish runs ``initialize_repo_metadata``, ``rpms`` and ``publish_directory``. A task that
finishes emits exactly ``updates`` reports (420 by default: the traffic Pulp's docs warn about
for one small repository); one that fails (``error``, with a :class:`~streamer.report.TaskError`)
or is canceled stops part-way and emits fewer. A finished sync spawns its publish
(``spawned_tasks``), which the same worker runs next; a failed or canceled sync spawns nothing.

Everything is drawn from one seeded RNG, so a seed replays the same task ids, outcomes and
report sequence, whatever the broker does and however many workers run at once.

Over 500 lines because the task model (steps, sizes, failures) and the pacing of the workers
that replay it are one noun, the simulation; the load harness imports both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

from .report import TERMINAL_STATES, Report, TaskError

__all__ = [
    "MIN_UPDATES",
    "PUBLISH_TASK_TYPE",
    "SYNC_TASK_TYPE",
    "Outcome",
    "Simulation",
    "Tally",
    "publish_task_reports",
    "run_simulation",
    "sync_task_reports",
]

Outcome = Literal["finished", "error", "canceled"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("finished", "error", "canceled")

MIN_UPDATES: Final = 10
"""Fewest reports a finished task may emit: waiting, accepted, finished and one per step."""

SYNC_TASK_TYPE: Final = "pulp.server.managers.repo.sync.sync"
PUBLISH_TASK_TYPE: Final = "pulp.server.managers.repo.publish.publish"

_HOST: Final = socket.gethostname()
# Pace in slices this long (seconds): small enough that a rate looks smooth, large enough that
# asyncio.sleep's ~1 ms granularity does not distort it.
_TICK: Final = 0.01
# When the broker holds us back below the target rate, forgive the debt beyond this many
# seconds instead of bursting to catch up once it recovers.
_MAX_DEBT: Final = 0.1


def _now() -> datetime:
    return datetime.now(UTC)


def _worker_name(worker: int) -> str:
    return f"reserved_resource_worker-{worker}@{_HOST}"


@dataclasses.dataclass(frozen=True, slots=True)
class _Step:
    """One named step of a task: its share of the reports, byte sizes, how it fails."""

    name: str
    weight: int
    item_bytes: tuple[int, int] | None  # per-item size range; None: no byte counts
    error: tuple[str, str]  # (code, description) when the task fails in this step


_SYNC_STEPS: Final = (
    _Step("metadata", 1, None, ("RPM1004", "Error retrieving metadata: Not Found")),
    _Step(
        "content",
        8,
        (20_000, 400_000),
        ("PLP0000", "Pulp exception occurred: units failed to download: 404 Not Found"),
    ),
    _Step(
        "errata",
        4,
        None,
        ("PLP0000", "Pulp exception occurred: DuplicateKeyError: erratum already imported"),
    ),
    _Step("comps", 1, None, ("PLP0000", "Pulp exception occurred: comps.xml: unexpected EOF")),
)
_PUBLISH_STEPS: Final = (
    _Step(
        "initialize_repo_metadata",
        1,
        None,
        ("PLP0000", "Pulp exception occurred: [Errno 13] Permission denied: 'repodata'"),
    ),
    _Step(
        "rpms", 10, None, ("PLP0000", "Pulp exception occurred: [Errno 28] No space left on device")
    ),
    _Step(
        "publish_directory",
        3,
        None,
        ("PLP0000", "Pulp exception occurred: [Errno 18] Invalid cross-device link"),
    ),
)


def _split(updates: int, weights: Sequence[int]) -> list[int]:
    """Items per step such that a finished task emits exactly ``updates`` reports.

    A step of ``n`` items emits ``n + 1`` running reports (0 done … n done); waiting, accepted
    and the terminal report add three. The items are shared out by weight (largest
    remainder), so a step may get 0 items when ``updates`` is tiny: it still reports once.
    """
    if updates < MIN_UPDATES:
        raise ValueError(f"updates must be at least {MIN_UPDATES}, got {updates}")
    items_total = updates - 3 - len(weights)
    weight_total = sum(weights)
    items = [items_total * w // weight_total for w in weights]
    by_remainder = sorted(
        range(len(weights)), key=lambda i: (-(items_total * weights[i] % weight_total), i)
    )
    for i in by_remainder[: items_total - sum(items)]:
        items[i] += 1
    return items


def _entry(
    state: str, items: int, done: int, sizes: list[int] | None, size_done: int
) -> dict[str, Any]:
    entry: dict[str, Any] = {"state": state, "items_total": items, "items_done": done}
    if sizes is not None:
        entry["size_total"] = sum(sizes)
        entry["size_done"] = size_done
    return entry


def _task_reports(
    *,
    task_id: str,
    task_type: str,
    repo: str,
    action: str,
    steps: Sequence[_Step],
    items: list[int],
    rng: random.Random,
    outcome: Outcome,
    stop: int,
    spawned: list[str],
    result: dict[str, Any],
    worker: int,
) -> Iterator[Report]:
    """The reports of one task; a failing one ends after ``stop`` running reports."""
    base: dict[str, Any] = {
        "task_id": task_id,
        "task_type": task_type,
        "tags": [f"pulp:repository:{repo}", f"pulp:action:{action}"],
        "worker_name": _worker_name(worker),
        "queue": f"{_worker_name(worker)}.dq",
        "group_id": repo,
    }
    sizes = [
        None if step.item_bytes is None else [rng.randint(*step.item_bytes) for _ in range(n)]
        for step, n in zip(steps, items, strict=True)
    ]
    yield Report(state="waiting", **base)
    yield Report(state="accepted", **base)
    started = _now()
    progress: dict[str, Any] = {step.name: {"state": "NOT_STARTED"} for step in steps}
    emitted = 0
    for step, n, step_sizes in zip(steps, items, sizes, strict=True):
        size_done = 0
        for done in range(n + 1):
            if emitted == stop:
                # The task dies in this step, before it reports `done` items.
                current = _entry("", n, max(done - 1, 0), step_sizes, size_done)
                if outcome == "error":
                    code, description = step.error
                    current["state"] = "FAILED"
                    current["error_details"] = [{"code": code, "error": description}]
                    error = TaskError(
                        code=code, description=description, data={"step": step.name, "repo": repo}
                    )
                else:
                    current["state"] = "CANCELLED"
                    error = None
                progress[step.name] = current
                yield Report(
                    state=outcome,
                    start_time=started,
                    finish_time=_now(),
                    progress_report=progress,
                    error=error,
                    **base,
                )
                return
            if done and step_sizes is not None:
                size_done += step_sizes[done - 1]
            state = "IN_PROGRESS" if done < n else "FINISHED"
            progress[step.name] = _entry(state, n, done, step_sizes, size_done)
            # A shallow copy: each report keeps the step entries as they were when it was made.
            yield Report(
                state="running", start_time=started, progress_report=dict(progress), **base
            )
            emitted += 1
    yield Report(
        state="finished",
        start_time=started,
        finish_time=_now(),
        progress_report=progress,
        result=result,
        spawned_tasks=spawned,
        **base,
    )


def _prepare(
    steps: Sequence[_Step], updates: int, outcome: Outcome, rng: random.Random
) -> tuple[list[int], int]:
    """Items per step and how many running reports the task emits before it ends."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    items = _split(updates, [step.weight for step in steps])
    running = updates - 3
    stop = running if outcome == "finished" else rng.randint(1, running - 1)
    return items, stop


def sync_task_reports(
    task_id: str,
    repo: str,
    *,
    updates: int = 420,
    spawned: list[str] | None = None,
    rng: random.Random | None = None,
    outcome: Outcome = "finished",
    worker: int = 0,
) -> Iterator[Report]:
    """The reports of one repository sync.

    Args:
        updates: reports in all when the sync finishes (at least :data:`MIN_UPDATES`).
        spawned: task ids listed in ``spawned_tasks`` of the finished report (a sync that
            fails or is canceled spawns nothing).
        outcome: ``finished``; or ``error``/``canceled`` after a random number of running
            reports, so fewer than ``updates`` in all.
        worker: number of the simulated worker (its name and queue).

    Raises:
        ValueError: ``updates`` too small or ``outcome`` unknown.
    """
    rng = rng or random.Random()
    items, stop = _prepare(_SYNC_STEPS, updates, outcome, rng)
    content = items[1]
    return _task_reports(
        task_id=task_id,
        task_type=SYNC_TASK_TYPE,
        repo=repo,
        action="sync",
        steps=_SYNC_STEPS,
        items=items,
        rng=rng,
        outcome=outcome,
        stop=stop,
        spawned=list(spawned or []),
        result={
            "result": "success",
            "importer_type_id": "yum_importer",
            "importer_id": "yum_importer",
            "repo_id": repo,
            "added_count": content,
            "removed_count": 0,
            "updated_count": 0,
        },
        worker=worker,
    )


def publish_task_reports(
    task_id: str,
    repo: str,
    *,
    updates: int = 420,
    rng: random.Random | None = None,
    outcome: Outcome = "finished",
    worker: int = 0,
) -> Iterator[Report]:
    """The reports of one repository publish (arguments as for :func:`sync_task_reports`)."""
    rng = rng or random.Random()
    items, stop = _prepare(_PUBLISH_STEPS, updates, outcome, rng)
    return _task_reports(
        task_id=task_id,
        task_type=PUBLISH_TASK_TYPE,
        repo=repo,
        action="publish",
        steps=_PUBLISH_STEPS,
        items=items,
        rng=rng,
        outcome=outcome,
        stop=stop,
        spawned=[],
        result={
            "result": "success",
            "distributor_type_id": "yum_distributor",
            "distributor_id": "yum_distributor",
            "repo_id": repo,
        },
        worker=worker,
    )


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Simulation:
    """What to simulate.

    Attributes:
        tasks: repository syncs to run; each one that finishes spawns a publish.
        concurrency: workers running at once; a worker runs a sync, then its publish, then
            the next sync.
        updates: reports per task that finishes (fewer for one that fails part-way).
        rate: target reports per second over all workers; 0 runs as fast as the broker
            confirms.
        error_rate, cancel_rate: chance that a task ends in ``error`` / ``canceled``.
        seed: for repeatable runs (same task ids, outcomes and report sequence).

    Raises:
        ValueError: a value is out of range.
    """

    tasks: int = 2
    concurrency: int = 2
    updates: int = 420
    rate: float = 0.0
    error_rate: float = 0.0
    cancel_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.tasks < 1:
            raise ValueError(f"tasks must be at least 1, got {self.tasks}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.updates < MIN_UPDATES:
            raise ValueError(f"updates must be at least {MIN_UPDATES}, got {self.updates}")
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise ValueError(f"rate must be 0 or a positive number, got {self.rate}")
        for name in ("error_rate", "cancel_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.error_rate + self.cancel_rate > 1:
            raise ValueError(
                f"error_rate + cancel_rate must be at most 1, got "
                f"{self.error_rate} + {self.cancel_rate}"
            )


@dataclasses.dataclass
class Tally:
    """Live counts of a running simulation: read them while it runs (the progress bar does).

    Attributes:
        planned: tasks that will have run by the end: two per sync until a sync fails
            (a failed or canceled sync spawns no publish).
        reports: reports handed to ``publish``.
        task_ids: every task started, in start order.
        syncs, publishes: tasks of each kind started.
        outcomes: tasks ended, by terminal state.
    """

    planned: int = 0
    reports: int = 0
    task_ids: list[str] = dataclasses.field(default_factory=list)
    syncs: int = 0
    publishes: int = 0
    outcomes: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    @property
    def done(self) -> int:
        """Tasks that reached a terminal state."""
        return sum(self.outcomes.values())

    def _count(self, report: Report) -> None:
        self.reports += 1
        state = report.state
        if state == "waiting":
            self.task_ids.append(report.task_id)
            if report.task_type == SYNC_TASK_TYPE:
                self.syncs += 1
            else:
                self.publishes += 1
        elif state in TERMINAL_STATES:
            self.outcomes[state] = self.outcomes.get(state, 0) + 1
            if state != "finished" and report.task_type == SYNC_TASK_TYPE:
                self.planned -= 1  # its publish will never run


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """Everything drawn for sync number ``n`` and its publish."""

    repo: str
    sync_id: str
    publish_id: str
    sync_outcome: Outcome
    publish_outcome: Outcome
    sync_seed: int
    publish_seed: int


def _outcome(rng: random.Random, sim: Simulation) -> Outcome:
    u = rng.random()
    if u < sim.error_rate:
        return "error"
    if u < sim.error_rate + sim.cancel_rate:
        return "canceled"
    return "finished"


def _plans(sim: Simulation) -> Iterator[_Plan]:
    """Plans of the syncs in order; each draws the same amount from the seeded RNG.

    So sync ``n`` gets the same ids and outcomes for a seed whatever the concurrency, the
    number of updates or the broker's speed: those only change the interleaving.
    """
    rng = random.Random(sim.seed)
    for n in range(sim.tasks):
        sync_id, publish_id = (uuid.UUID(int=rng.getrandbits(128), version=4) for _ in "sp")
        yield _Plan(
            repo=f"repo-{n}",
            sync_id=str(sync_id),
            publish_id=str(publish_id),
            sync_outcome=_outcome(rng, sim),
            publish_outcome=_outcome(rng, sim),
            sync_seed=rng.getrandbits(64),
            publish_seed=rng.getrandbits(64),
        )


def _worker(index: int, plans: Iterator[_Plan], sim: Simulation) -> Iterator[Report]:
    """One simulated worker: takes the next sync, runs it, then the publish it spawned."""
    for plan in plans:
        yield from sync_task_reports(
            plan.sync_id,
            plan.repo,
            updates=sim.updates,
            spawned=[plan.publish_id],
            rng=random.Random(plan.sync_seed),
            outcome=plan.sync_outcome,
            worker=index,
        )
        if plan.sync_outcome == "finished":
            yield from publish_task_reports(
                plan.publish_id,
                plan.repo,
                updates=sim.updates,
                rng=random.Random(plan.publish_seed),
                outcome=plan.publish_outcome,
                worker=index,
            )


async def run_simulation(
    publish: Callable[[Report], None],
    simulation: Simulation | None = None,
    *,
    throttle: Callable[[int], Awaitable[object]] | None = None,
    in_flight: int = 1000,
    tally: Tally | None = None,
    **options: Any,
) -> Tally:
    """Run the simulated workers, handing every report to ``publish``; return the tally.

    Args:
        publish: where reports go, e.g. ``Publisher.publish``.
        simulation: what to run (default :class:`Simulation`); ``options`` override fields.
        throttle: ``Publisher.throttle``. Without it nothing follows the broker's pace and,
            running as fast as possible, the publisher coalesces most reports away.
        in_flight: reports allowed pending at once; at most the publisher's
            ``confirm_window`` (and ``max_pending``), so every report can be written at once.
        tally: counts to update as it runs (pass one to watch it live).

    Raises:
        ValueError: an option is out of range.
    """
    sim = dataclasses.replace(simulation or Simulation(), **options)
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, got {in_flight}")
    tally = tally if tally is not None else Tally()
    tally.planned += 2 * sim.tasks
    count = tally._count
    plans = _plans(sim)
    # One coroutine drives every worker, one report each in turn. The publisher coalesces a
    # report that is still waiting to be written when its task's next one arrives, and it
    # writes only when the event loop runs: so between two yields each task gets at most one
    # report (a batch holds at most one report per worker), and every batch ends with
    # `throttle(limit)`, which yields (the writer runs) and then waits until fewer than
    # `limit` reports are pending. With `limit + batch <= in_flight` the confirm window
    # always has room for the whole batch, so nothing waits long enough to be superseded:
    # the offered load follows the broker's confirms instead of outrunning them. One yield
    # per batch rather than per report also keeps the generator's own cost low.
    workers = deque(_worker(i, plans, sim) for i in range(min(sim.concurrency, sim.tasks)))
    batch = max(1, min(len(workers), in_flight // 2))
    if sim.rate:
        batch = max(1, min(batch, int(sim.rate * _TICK)))
    limit = max(in_flight - batch, 1)
    next_at = time.monotonic()
    while workers:
        if sim.rate:
            # Deadline pacing (a token bucket): batch k may start at start + reports/rate.
            now = time.monotonic()
            next_at = max(next_at, now - _MAX_DEBT)
            if next_at > now:
                await asyncio.sleep(next_at - now)
        sent = 0
        for _ in range(min(batch, len(workers))):
            worker = workers.popleft()
            report = next(worker, None)
            if report is None:
                continue  # this worker has no sync left
            workers.append(worker)
            publish(report)
            count(report)
            sent += 1
        if not sent:
            continue  # the workers asked had nothing left: no report to pace or wait for
        if sim.rate:
            next_at += sent / sim.rate
        if throttle is not None:
            await throttle(limit)
        else:
            await asyncio.sleep(0)
    return tally
