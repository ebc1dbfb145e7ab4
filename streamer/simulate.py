"""Simulated Pulp-like task workers: repository syncs that spawn publishes.

A sync goes waiting → accepted → running through named steps (metadata, content download
with item and byte counts, errata, comps) and finishes, spawning a publish task that runs
its own steps. With the default sizes a sync and its publish emit 400+ reports each, the
traffic Pulp's docs warn about for one small repository.
"""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from .report import Report

__all__ = ["publish_task_reports", "run_simulation", "sync_task_reports"]

_WORKER = f"reserved_resource_worker-0@{socket.gethostname()}"


def _now() -> datetime:
    return datetime.now(UTC)


def _steps(
    task_id: str,
    task_type: str,
    tags: list[str],
    steps: list[tuple[str, int]],
    rng: random.Random,
    spawned: list[str],
    group_id: str,
) -> Iterator[Report]:
    base: dict[str, Any] = {
        "task_id": task_id,
        "task_type": task_type,
        "tags": tags,
        "worker_name": _WORKER,
        "queue": f"{_WORKER}.dq",
        "group_id": group_id,
    }
    yield Report(state="waiting", **base)
    yield Report(state="accepted", **base)
    started = _now()
    progress: dict[str, Any] = {name: {"state": "NOT_STARTED"} for name, _ in steps}
    for name, items in steps:
        size_total = items * rng.randint(20_000, 400_000)
        done_bytes = 0
        for done in range(items + 1):
            if done:
                done_bytes = min(size_total, done_bytes + rng.randint(1, 2 * size_total // items))
            progress[name] = {
                "state": "IN_PROGRESS" if done < items else "FINISHED",
                "items_total": items,
                "items_done": done,
                "size_total": size_total,
                "size_done": size_total if done == items else done_bytes,
            }
            yield Report(
                state="running", start_time=started, progress_report=dict(progress), **base
            )
    yield Report(
        state="finished",
        start_time=started,
        finish_time=_now(),
        progress_report=progress,
        result={"result": "success", "importer_type_id": "yum_importer"},
        spawned_tasks=spawned,
        **base,
    )


def _split(updates: int, weights: dict[str, int]) -> list[tuple[str, int]]:
    """Share ``updates`` reports among steps so that the task emits exactly that many.

    A step of ``n`` items emits ``n + 1`` running reports; waiting, accepted and finished
    add three more.
    """
    running = max(updates - 3, 2 * len(weights)) - len(weights)
    total = sum(weights.values())
    items = [max(running * w // total, 1) for w in weights.values()]
    items[0] += running - sum(items)
    return list(zip(weights, items, strict=True))


def sync_task_reports(
    task_id: str,
    repo: str,
    *,
    updates: int = 420,
    spawned: list[str] | None = None,
    rng: random.Random | None = None,
) -> Iterator[Report]:
    """The reports of one repository sync: ``updates`` reports in all."""
    rng = rng or random.Random()
    steps = _split(updates, {"metadata": 1, "content": 8, "errata": 4, "comps": 1})
    tags = [f"pulp:repository:{repo}", "pulp:action:sync"]
    return _steps(
        task_id,
        "pulp.server.managers.repo.sync.sync",
        tags,
        steps,
        rng,
        spawned or [],
        group_id=repo,
    )


def publish_task_reports(
    task_id: str,
    repo: str,
    *,
    updates: int = 420,
    rng: random.Random | None = None,
) -> Iterator[Report]:
    """The reports of one repository publish: ``updates`` reports in all."""
    rng = rng or random.Random()
    steps = _split(updates, {"initialize_repo_metadata": 1, "rpms": 10, "publish_directory": 3})
    tags = [f"pulp:repository:{repo}", "pulp:action:publish"]
    return _steps(
        task_id, "pulp.server.managers.repo.publish.publish", tags, steps, rng, [], group_id=repo
    )


async def run_simulation(
    publish: Any,
    *,
    tasks: int = 2,
    updates: int = 420,
    seed: int | None = None,
    pace: float = 0.0,
) -> list[str]:
    """Run ``tasks`` syncs, each spawning a publish, concurrently; return all task ids.

    Args:
        publish: the ``publish`` method of a publisher (anything taking a Report).
        pace: seconds between two reports of one task (0: as fast as possible, yielding to
            the event loop after every report).
    """
    rng = random.Random(seed)

    async def worker(n: int) -> list[str]:
        repo = f"repo-{n}"
        sync_id, publish_id = (str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in "sp")
        for report in sync_task_reports(
            sync_id, repo, updates=updates, spawned=[publish_id], rng=rng
        ):
            publish(report)
            await asyncio.sleep(pace)
        for report in publish_task_reports(publish_id, repo, updates=updates, rng=rng):
            publish(report)
            await asyncio.sleep(pace)
        return [sync_id, publish_id]

    ids = await asyncio.gather(*(worker(n) for n in range(tasks)))
    return [task_id for pair in ids for task_id in pair]
