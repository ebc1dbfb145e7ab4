"""The simulated task workers (no network): counts, spawning, progress, seeds, rates, pacing."""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streamer import TERMINAL_STATES, Report
from streamer.simulate import (
    MIN_UPDATES,
    PUBLISH_TASK_TYPE,
    SYNC_TASK_TYPE,
    Outcome,
    Simulation,
    Tally,
    publish_task_reports,
    run_simulation,
    sync_task_reports,
)

Factory = Callable[..., Iterator[Report]]
KINDS: dict[str, Factory] = {"sync": sync_task_reports, "publish": publish_task_reports}
STEPS = {
    "sync": ["metadata", "content", "errata", "comps"],
    "publish": ["initialize_repo_metadata", "rpms", "publish_directory"],
}


async def simulate(**options: Any) -> tuple[Tally, list[Report]]:
    sent: list[Report] = []
    tally = await run_simulation(sent.append, Simulation(**options))
    return tally, sent


def by_task(reports: list[Report]) -> dict[str, list[Report]]:
    tasks: dict[str, list[Report]] = defaultdict(list)
    for r in reports:
        tasks[r.task_id].append(r)
    return tasks


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("updates", [MIN_UPDATES, 11, 17, 50, 420, 1001])
def test_finished_task_emits_exactly_updates_reports(kind: str, updates: int) -> None:
    reports = list(KINDS[kind]("t1", "zoo", updates=updates, rng=random.Random(updates)))
    assert len(reports) == updates
    assert [r.state for r in reports] == ["waiting", "accepted"] + ["running"] * (updates - 3) + [
        "finished"
    ]
    final = reports[-1]
    assert list(final.progress_report) == STEPS[kind]
    assert all(step["state"] == "FINISHED" for step in final.progress_report.values())
    assert final.result["result"] == "success" and final.error is None
    assert final.start_time is not None and final.finish_time is not None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("outcome", ["error", "canceled"])
def test_failing_task_stops_part_way_with_its_state_last(kind: str, outcome: Outcome) -> None:
    lengths = set()
    for seed in range(60):
        reports = list(
            KINDS[kind]("t1", "zoo", updates=60, rng=random.Random(seed), outcome=outcome)
        )
        lengths.add(len(reports))
        assert 4 <= len(reports) < 60
        assert [r.state for r in reports[:-1]] == ["waiting", "accepted"] + ["running"] * (
            len(reports) - 3
        )
        last = reports[-1]
        assert last.state == outcome and last.finish_time is not None
        assert last.result is None and last.spawned_tasks == []
        stopped = [
            name
            for name, step in last.progress_report.items()
            if step["state"] in ("FAILED", "CANCELLED")
        ]
        assert len(stopped) == 1, last.progress_report
        step = last.progress_report[stopped[0]]
        if outcome == "error":
            assert step["state"] == "FAILED"
            assert last.error is not None and last.error.code and last.error.description
            assert last.error.data["step"] == stopped[0]
        else:
            assert step["state"] == "CANCELLED" and last.error is None
    assert len(lengths) > 20, "the stopping point should vary with the seed"


def test_a_failed_sync_spawns_nothing() -> None:
    finished = list(sync_task_reports("s", "zoo", updates=20, spawned=["p"]))
    failed = list(sync_task_reports("s", "zoo", updates=20, spawned=["p"], outcome="error"))
    assert finished[-1].spawned_tasks == ["p"]
    assert all(r.spawned_tasks == [] for r in finished[:-1] + failed)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("outcome", ["finished", "error", "canceled"])
def test_progress_counters_monotonic_and_bytes_within_totals(kind: str, outcome: Outcome) -> None:
    for seed in range(10):
        reports = list(
            KINDS[kind]("t", "zoo", updates=200, rng=random.Random(seed), outcome=outcome)
        )
        seen: dict[str, dict[str, Any]] = {}
        for r in reports:
            for name, step in r.progress_report.items():
                if "items_total" not in step:
                    assert step == {"state": "NOT_STARTED"}
                    continue
                assert 0 <= step["items_done"] <= step["items_total"]
                if "size_total" in step:
                    assert 0 <= step["size_done"] <= step["size_total"]
                prev = seen.get(name)
                if prev is not None:
                    assert step["items_total"] == prev["items_total"]
                    assert step["items_done"] >= prev["items_done"], (name, prev, step)
                    if "size_total" in step:
                        assert step["size_total"] == prev["size_total"]
                        assert step["size_done"] >= prev["size_done"], (name, prev, step)
                seen[name] = step


def test_content_download_counts_items_and_bytes() -> None:
    reports = list(sync_task_reports("s", "zoo", updates=100, rng=random.Random(3)))
    content = [r.progress_report["content"] for r in reports if "content" in r.progress_report]
    sizes = [c["size_done"] for c in content if "size_done" in c]
    assert len(set(sizes)) > 30, "bytes should grow item by item"
    final = content[-1]
    assert final["items_done"] == final["items_total"] > 0
    assert final["size_done"] == final["size_total"] >= 20_000 * final["items_total"]


async def test_simulation_report_counts_per_task() -> None:
    tally, sent = await simulate(
        tasks=12, concurrency=3, updates=30, error_rate=0.3, cancel_rate=0.2, seed=11
    )
    tasks = by_task(sent)
    outcomes: dict[str, int] = defaultdict(int)
    for task_id, reports in tasks.items():
        states = [r.state for r in reports]
        assert sum(s in TERMINAL_STATES for s in states) == 1, task_id
        assert states[-1] in TERMINAL_STATES, task_id
        outcomes[states[-1]] += 1
        if states[-1] == "finished":
            assert len(reports) == 30
        else:
            assert len(reports) < 30
    assert outcomes["finished"] and outcomes["error"] and outcomes["canceled"]
    assert tally.reports == len(sent)
    assert tally.done == tally.planned == len(tasks)
    assert tally.outcomes == dict(outcomes) | {k: 0 for k in tally.outcomes if k not in outcomes}
    assert tally.task_ids == list(tasks)  # first report of each task, in order
    assert tally.syncs == 12


async def test_spawned_publish_follows_its_finished_sync() -> None:
    _, sent = await simulate(
        tasks=20, concurrency=4, updates=20, error_rate=0.25, cancel_rate=0.15, seed=5
    )
    tasks = by_task(sent)
    index = {id(r): n for n, r in enumerate(sent)}
    syncs = [t for t, rs in tasks.items() if rs[0].task_type == SYNC_TASK_TYPE]
    publishes = {t for t, rs in tasks.items() if rs[0].task_type == PUBLISH_TASK_TYPE}
    assert len(syncs) == 20
    spawned_ids = []
    failed = 0
    for sync_id in syncs:
        final = tasks[sync_id][-1]
        if final.state != "finished":
            failed += 1
            assert final.spawned_tasks == []
            assert not any(tasks[p][0].group_id == final.group_id for p in publishes)
            continue
        [publish_id] = final.spawned_tasks
        spawned_ids.append(publish_id)
        publish = tasks[publish_id]
        assert publish[0].task_type == PUBLISH_TASK_TYPE
        assert publish[0].group_id == final.group_id
        assert publish[0].worker_name == final.worker_name  # the same worker runs it next
        assert index[id(publish[0])] > index[id(final)]
    assert 0 < failed < 20
    assert sorted(spawned_ids) == sorted(publishes)


async def test_same_seed_same_tasks_and_states() -> None:
    options: dict[str, Any] = {
        "tasks": 8,
        "updates": 25,
        "error_rate": 0.2,
        "cancel_rate": 0.2,
        "seed": 42,
    }

    def states(sent: list[Report]) -> list[tuple[str, str, dict[str, Any]]]:
        return [(r.task_id, r.state, r.progress_report) for r in sent]

    _, first = await simulate(concurrency=3, **options)
    _, again = await simulate(concurrency=3, **options)
    assert states(first) == states(again)
    # The concurrency changes the interleaving only: each task's ids and reports stay.
    _, serial = await simulate(concurrency=1, **options)
    assert {t: states(rs) for t, rs in by_task(serial).items()} == {
        t: states(rs) for t, rs in by_task(first).items()
    }
    _, other = await simulate(concurrency=3, **(options | {"seed": 43}))
    assert not set(by_task(other)) & set(by_task(first))


async def test_error_and_cancel_rates_roughly_honoured() -> None:
    tally, sent = await simulate(
        tasks=200, concurrency=16, updates=10, error_rate=0.2, cancel_rate=0.1, seed=5
    )
    ended = tally.done
    assert ended == len(by_task(sent)) == tally.planned
    assert 200 + 0.6 * 200 < ended < 200 + 0.8 * 200  # ~70% of syncs finish and spawn
    assert abs(tally.outcomes["error"] / ended - 0.2) < 0.07, tally.outcomes
    assert abs(tally.outcomes["canceled"] / ended - 0.1) < 0.05, tally.outcomes

    tally, _ = await simulate(tasks=50, updates=10, seed=1)
    assert tally.outcomes == {"finished": 100, "error": 0, "canceled": 0}
    tally, _ = await simulate(tasks=50, updates=10, error_rate=1, seed=1)
    assert tally.outcomes == {"finished": 0, "error": 50, "canceled": 0}
    assert tally.publishes == 0


@pytest.mark.parametrize(("concurrency", "in_flight", "batch"), [(3, 1000, 3), (20, 8, 4)])
async def test_throttled_after_every_batch_of_distinct_tasks(
    concurrency: int, in_flight: int, batch: int
) -> None:
    """Between two throttle calls a task has at most one report: nothing can coalesce."""
    sent: list[Report] = []
    marks: list[tuple[int, int]] = []

    async def throttle(limit: int) -> bool:
        marks.append((len(sent), limit))
        return True

    await run_simulation(
        sent.append,
        Simulation(tasks=30, concurrency=concurrency, updates=12, seed=2),
        throttle=throttle,
        in_flight=in_flight,
    )
    assert marks[-1][0] == len(sent)
    start = 0
    for end, limit in marks:
        segment = [r.task_id for r in sent[start:end]]
        assert 0 < len(segment) <= batch
        assert len(set(segment)) == len(segment)
        assert limit + batch <= in_flight
        start = end


async def test_rate_paces_the_reports() -> None:
    started = time.monotonic()
    tally, _ = await simulate(tasks=1, updates=50, rate=2000)
    elapsed = time.monotonic() - started
    assert tally.reports == 100
    assert 99 / 2000 * 0.9 <= elapsed < 2.0  # the last report may go at 99/2000 s


async def test_options_override_the_simulation() -> None:
    sent: list[Report] = []
    tally = await run_simulation(sent.append, tasks=1, updates=MIN_UPDATES, seed=1)
    assert len(sent) == tally.reports == 2 * MIN_UPDATES
    assert len(tally.task_ids) == 2


@pytest.mark.parametrize(
    "options",
    [
        {"tasks": 0},
        {"concurrency": 0},
        {"updates": MIN_UPDATES - 1},
        {"rate": -1},
        {"rate": math.nan},
        {"rate": math.inf},
        {"error_rate": 1.5},
        {"cancel_rate": -0.1},
        {"error_rate": 0.6, "cancel_rate": 0.6},
    ],
)
def test_bad_options_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Simulation(**options)


def test_bad_task_arguments_raise_at_once() -> None:
    with pytest.raises(ValueError, match="updates"):
        sync_task_reports("t", "zoo", updates=MIN_UPDATES - 1)
    with pytest.raises(ValueError, match="outcome"):
        publish_task_reports("t", "zoo", outcome="exploded")  # type: ignore[arg-type]
