"""Simulated task workers that feed one publisher at a pace set from outside.

A worker is what a locust user stands for: it runs a repository sync and then the publish
that sync spawned, the same Pulp-like reports as ``streamer simulate`` (see
:mod:`streamer.simulate`: 400+ reports per task, errors and cancels part-way), and hands each
report to the process's one :class:`~streamer.BackgroundPublisher`. The publisher's loop is a
real OS thread, so the workers never wait on the broker: the pace is open-loop, like a real
fleet of task workers, and whatever the broker cannot take shows up as drops and latency.

A worker runs on a schedule: it wakes every ``max(tick, 1 / rate)`` seconds and hands over
the reports due by then (one every ``1 / rate`` seconds), so tens of thousands of reports per
second cost a few hundred wakes, not one each. Each report goes out with the time of the
scheduled wake that owes it as ``due`` (see ``Publisher.publish``): latencies are measured
from the schedule. A worker that falls behind (stalled, or the CPU is saturated) catches up
wake by wake when it runs again, each report still stamped with its scheduled wake, so the
time it was late counts in the latency of every report it owed; skipping them, or timing them
from when the worker got round to them, would hide the stall (coordinated omission).

Nothing here imports gevent: ``time.sleep`` is gevent's sleep once locust has patched it, and
a plain thread's otherwise.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Final

import msgspec

from streamer import Report
from streamer.report import encode
from streamer.simulate import (
    Outcome,
    Simulation,
    publish_task_reports,
    sync_task_reports,
)

__all__ = ["Counts", "Mix", "Traffic"]

_replace: Final = msgspec.structs.replace


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mix:
    """What the simulated tasks look like.

    Attributes:
        updates: reports of a task that finishes (fewer for one that fails part-way).
        error_rate, cancel_rate: chance that a task ends in ``error`` / ``canceled``.
        report_size: approximate mean encoded size of a report in bytes (padding goes into
            a tag); 0 keeps the model's own size (about 600-700 bytes).

    Raises:
        ValueError: a value is out of range.
    """

    updates: int = 420
    error_rate: float = 0.0
    cancel_rate: float = 0.0
    report_size: int = 0

    def __post_init__(self) -> None:
        Simulation(updates=self.updates, error_rate=self.error_rate, cancel_rate=self.cancel_rate)
        if self.report_size < 0:
            raise ValueError(f"report_size must be 0 or more, got {self.report_size}")


@dataclasses.dataclass
class Counts:
    """What the workers of this process handed over (read by the ledger)."""

    offered: int = 0  # reports handed to publish()
    tasks_started: int = 0
    syncs: int = 0
    publishes: int = 0
    outcomes: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"finished": 0, "error": 0, "canceled": 0}
    )

    @property
    def tasks_done(self) -> int:
        return sum(self.outcomes.values())


class Traffic:
    """The task workers of one process, sharing one publisher and one set of counts.

    Args:
        publish: where reports go, with their intended send time (``time.time()`` seconds),
            e.g. ``BackgroundPublisher.publish``.
        mix: what the tasks look like.
        tick: the shortest sleep between two hand-overs of a worker, seconds.
        variants: tasks generated per kind and outcome, then replayed (see ``_task``).
        seed: for repeatable task ids and outcomes.
    """

    def __init__(
        self,
        publish: Callable[[Report, float], None],
        mix: Mix | None = None,
        *,
        tick: float = 0.02,
        variants: int = 16,
        seed: int | None = None,
    ) -> None:
        self.publish = publish
        self.mix = mix or Mix()
        self.tick = tick
        self.counts = Counts()
        self._rng = random.Random(seed)
        self.variants = variants
        self._pools: dict[tuple[str, str], list[list[Report]]] = {}
        self._padding = self._pad_tag(self.mix.report_size)

    def _pad_tag(self, size: int) -> str | None:
        """A tag that brings the model's mean report to ``size`` bytes (None: no padding)."""
        if not size:
            return None
        sample = list(sync_task_reports("0" * 32, "repo-0", updates=self.mix.updates))
        mean = sum(len(encode(r)) for r in sample) / len(sample)
        # A tag costs its length plus quotes and a comma.
        return "pad:" + "x" * max(int(size - mean) - 7, 0)

    def _outcome(self) -> Outcome:
        u = self._rng.random()
        if u < self.mix.error_rate:
            return "error"
        if u < self.mix.error_rate + self.mix.cancel_rate:
            return "canceled"
        return "finished"

    def _generate(
        self, kind: str, task_id: str, outcome: Outcome, worker: int, spawned: str
    ) -> Iterator[Report]:
        rng, mix = self._rng, self.mix
        repo = f"repo-{rng.randrange(10_000)}"
        seeded = random.Random(rng.getrandbits(64))
        if kind == "sync":
            reports = sync_task_reports(
                task_id,
                repo,
                updates=mix.updates,
                spawned=[spawned],
                rng=seeded,
                outcome=outcome,
                worker=worker,
            )
        else:
            reports = publish_task_reports(
                task_id, repo, updates=mix.updates, rng=seeded, outcome=outcome, worker=worker
            )
        if self._padding is None:
            return reports
        padding = self._padding
        return (_replace(r, tags=[*r.tags, padding]) for r in reports)

    def _task(
        self, kind: str, task_id: str, outcome: Outcome, worker: int, spawned: str = ""
    ) -> Iterator[Report]:
        """One task's reports: freshly generated, or a stored variant with this task's ids.

        Generating a report costs about 2-3 µs, a third of what streamer spends publishing it;
        at tens of thousands of reports per second on cores shared with the broker that
        decides the rate the harness can offer. So up
        to ``variants`` tasks per (kind, outcome) are generated and kept, and later tasks
        replay one of them under their own task id (their ``start_time``/``finish_time`` are
        then the variant's). ``variants=0`` generates every task.
        """
        if not self.variants:
            yield from self._generate(kind, task_id, outcome, worker, spawned)
            return
        pool = self._pools.setdefault((kind, outcome), [])
        if len(pool) < self.variants:
            pool.append(list(self._generate(kind, "0" * 36, outcome, worker, "0" * 36)))
            variant = pool[-1]
        else:
            variant = pool[self._rng.randrange(len(pool))]
        last = len(variant) - 1
        for i, report in enumerate(variant):
            if i == last and report.spawned_tasks:
                yield _replace(report, task_id=task_id, spawned_tasks=[spawned])
            else:
                yield _replace(report, task_id=task_id)

    def tasks(self, worker: int) -> Iterator[Report]:
        """One sync and, if it finishes, the publish it spawned: their reports in order."""
        rng, counts = self._rng, self.counts
        sync_id, publish_id = (str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in "sp")
        sync_outcome = self._outcome()
        runs = [("sync", self._task("sync", sync_id, sync_outcome, worker, publish_id))]
        if sync_outcome == "finished":
            runs.append(("publish", self._task("publish", publish_id, self._outcome(), worker)))
        for kind, reports in runs:
            counts.tasks_started += 1
            if kind == "sync":
                counts.syncs += 1
            else:
                counts.publishes += 1
            report = None
            for report in reports:
                yield report
            if report is not None:
                counts.outcomes[report.state] += 1

    def run(self, worker: int, rate: Callable[[], float]) -> None:
        """Run one sync and its publish at ``rate()`` reports per second (read every wake).

        A rate of 0 pauses the worker (the schedule starts again when it resumes). Returns
        when the tasks have ended.
        """
        reports = self.tasks(worker)
        publish, counts, tick = self.publish, self.counts, self.tick
        clock, sleep = time.monotonic, time.sleep
        to_wall = time.time() - clock()  # intended times go out as time.time() values
        due = wake = 0.0  # when the next report is due, and the next scheduled wake
        paused = True
        while True:
            pace = rate()
            now = clock()
            if pace <= 0:
                paused = True
                sleep(tick)
                continue
            if paused:  # (re)start the schedule now
                due = wake = now
                paused = False
            interval = 1.0 / pace
            sent = owed = 0
            while wake <= now:  # every scheduled wake until now, late ones included
                owe = int((wake - due) / interval) + 1 if due <= wake else 0
                owed += owe
                intended = wake + to_wall
                for report in islice(reports, owe):
                    publish(report, intended)
                    sent += 1
                due += owe * interval
                wake += max(tick, interval)
            counts.offered += sent
            if sent < owed:
                return
            sleep(max(0.0, wake - clock()))
