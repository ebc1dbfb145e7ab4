"""``streamer simulate`` as a user runs it: a subprocess against the real broker."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import pytest

from tests.helpers import run_streamer_async
from tests.integration.conftest import Collector

_SUMMARY = re.compile(
    r"(?P<published>[\d,]+) published: (?P<confirmed>[\d,]+) confirmed, "
    r"(?P<coalesced>[\d,]+) coalesced, (?P<dropped>[\d,]+) dropped"
)


def counts(summary: str) -> dict[str, int]:
    match = _SUMMARY.search(summary)
    assert match, summary
    return {name: int(value.replace(",", "")) for name, value in match.groupdict().items()}


def by_task(reports: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    tasks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for body in reports:
        tasks[body["task_id"]].append(body)
    return tasks


async def test_simulate_delivers_every_task(
    broker_url: str, exchange: str, collector: Collector
) -> None:
    code, out, err = await run_streamer_async(
        "simulate",
        *("--url", broker_url, "-e", exchange),
        *("--tasks", "3", "--concurrency", "2", "--updates", "50", "--seed", "1"),
    )
    assert code == 0, out + err
    assert err == "", "stderr is not a terminal here: no progress bar, no noise"
    assert "simulated 3 syncs and 3 publishes" in out
    assert "6 done: 6 finished, 0 error, 0 canceled" in out
    assert "OK: every report confirmed" in out
    assert counts(out) == {"published": 300, "confirmed": 300, "coalesced": 0, "dropped": 0}

    await collector.wait_for(300)
    tasks = by_task(collector.reports())
    assert len(tasks) == 6
    spawned = set()
    for task_id, reports in tasks.items():
        seqs = [r["seq"] for r in reports]
        assert seqs == list(range(1, 51)), f"{task_id}: {seqs}"
        assert [r["state"] for r in reports[:2]] == ["waiting", "accepted"]
        assert reports[-1]["state"] == "finished", task_id
        spawned.update(reports[-1]["spawned_tasks"])
    publishes = {t for t, rs in tasks.items() if rs[0]["task_type"].endswith("publish")}
    assert spawned == publishes and len(publishes) == 3


async def test_simulate_failures_end_with_their_state(
    broker_url: str, exchange: str, collector: Collector
) -> None:
    code, out, err = await run_streamer_async(
        "simulate",
        *("--url", broker_url, "-e", exchange, "--tasks", "8", "--concurrency", "3"),
        *("--updates", "30", "--error-rate", "0.3", "--cancel-rate", "0.2", "--seed", "2"),
    )
    assert code == 0, out + err
    confirmed = counts(out)["confirmed"]
    await collector.wait_for(confirmed)
    tasks = by_task(collector.reports())
    final: dict[str, int] = defaultdict(int)
    for task_id, reports in tasks.items():
        seqs = [r["seq"] for r in reports]
        assert seqs == sorted(set(seqs)), f"{task_id}: seq not increasing: {seqs}"
        state = reports[-1]["state"]
        assert state in ("finished", "error", "canceled"), task_id
        final[state] += 1
        if state == "error":
            assert reports[-1]["error"]["code"] and reports[-1]["error"]["description"]
    summary = (
        f"{len(tasks)} done: {final['finished']} finished, {final['error']} error, "
        f"{final['canceled']} canceled"
    )
    assert summary in out
    assert final["error"] and final["canceled"], "seed 2 should fail some tasks"


async def test_rate_paces_the_run(broker_url: str, exchange: str, collector: Collector) -> None:
    code, out, err = await run_streamer_async(
        "simulate",
        *("--url", broker_url, "-e", exchange, "--tasks", "3", "--concurrency", "2"),
        *("--updates", "50", "--rate", "500"),
    )
    assert code == 0, out + err
    assert counts(out)["confirmed"] == 300
    elapsed = float(re.search(r"elapsed\s+([\d.]+) s", out).group(1))  # type: ignore[union-attr]
    assert 0.4 <= elapsed <= 3, out  # 300 reports at 500/s: about 0.6 s
    reports = (await collector.wait_for(300))[:300]
    sent = sorted(body["sent_at"] for _, body, _ in reports)
    assert 0.4 <= sent[-1] - sent[0] <= 3, "the reports' own timestamps span about 0.6 s"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--error-rate", "2"], "--error-rate"),
        (["--error-rate", "0.6", "--cancel-rate", "0.6"], "--cancel-rate"),
        (["--updates", "9"], "--updates"),
        (["--concurrency", "0"], "--concurrency"),
    ],
)
async def test_bad_option_is_a_one_line_usage_error(args: list[str], complaint: str) -> None:
    code, out, err = await run_streamer_async("simulate", *args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("streamer: usage error:") and complaint in lines[0]
