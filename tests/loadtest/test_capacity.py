"""The rate plans and their measurement (loadtest/capacity.py): no broker, no locust."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.capacity import (
    Bounds,
    CapacitySearch,
    StepResult,
    Steps,
    measure,
    parse_steps,
    window,
)
from streamer.stats import LatencyHistogram

BOUNDS_MS = [LatencyHistogram.upper_bound(i) * 1e3 for i in range(LatencyHistogram.BUCKETS)]


def _result(offered: float, *, confirmed: float | None = None, p99: float = 5.0) -> StepResult:
    return StepResult(
        step=1,
        offered=offered,
        published=offered,
        confirmed=offered if confirmed is None else confirmed,
        tasks=offered / 840,
        drop_ratio=0.0,
        p50=1.0,
        p75=2.0,
        p95=3.0,
        p99=p99,
        seconds=7.0,
    )


def _snap(t: float, published: int, *, bucket: int = 30, dropped: int = 0) -> dict[str, Any]:
    latency = [0] * LatencyHistogram.BUCKETS
    latency[bucket] = published - dropped
    return {
        "t": t,
        "published": published,
        "confirmed": published - dropped,
        "coalesced": 0,
        "dropped": {"overflow": dropped},
        "tasks_done": published // 840,
        "latency": latency,
    }


def test_parse_steps() -> None:
    assert parse_steps("5000:30, 20000:60") == [(5000.0, 30.0), (20000.0, 60.0)]
    for bad in ("", "5000", "5000:0", "x:10", "-1:10", "5000:inf"):
        with pytest.raises(ValueError, match=r"RATE:SECONDS|no rate steps"):
            parse_steps(bad)


def test_search_grows_until_a_failure_then_bisects() -> None:
    search = CapacitySearch(
        start=1000, factor=2, max_rate=1e6, refine=2, retry=False, bounds=Bounds()
    )
    rates = [search.first()[0]]  # type: ignore[index]
    capacity = 5200.0  # the broker confirms no more than this
    while True:
        rate = rates[-1]
        step = search.next(_result(rate, confirmed=min(rate, capacity)))
        if step is None:
            break
        rates.append(step[0])
    assert rates == [1000, 2000, 4000, 8000, 6000, 5000]
    best = search.best
    assert best is not None and best.offered == 5000
    assert [r.passed for r in search.results] == [True, True, True, False, False, True]
    assert "confirmed" in search.results[3].why
    assert search.summary()["result"]["offered"] == 5000


def test_search_stops_at_the_ceiling_and_on_latency() -> None:
    search = CapacitySearch(start=1000, factor=4, max_rate=3000, bounds=Bounds(p99_ms=50))
    assert search.first() == (1000, 10.0)
    assert search.next(_result(1000)) == (3000, 10.0)
    assert search.next(_result(3000)) is None
    slow = CapacitySearch(start=1000, bounds=Bounds(p99_ms=50), refine=0, retry=False)
    assert slow.next(_result(1000, p99=80)) == (800, 10.0)  # steps down (factor 1.25)
    assert slow.best is None and "p99" in slow.results[0].why
    assert slow.next(_result(800, p99=20)) is None  # passed; no refinement asked for
    assert slow.best is not None and slow.best.offered == 800


def test_search_steps_down_when_the_first_rate_fails() -> None:
    search = CapacitySearch(start=8000, factor=2, refine=1, retry=False, bounds=Bounds())
    capacity = 3000.0
    rates = [8000.0]
    while (step := search.next(_result(rates[-1], confirmed=min(rates[-1], capacity)))) is not None:
        rates.append(step[0])
    assert rates == [8000, 4000, 2000, 3000]
    assert search.best is not None and search.best.offered == 3000
    lowest = CapacitySearch(start=150, factor=2, retry=False, bounds=Bounds())
    assert lowest.next(_result(150, p99=1e3)) is None


def test_a_failure_counts_only_when_it_repeats() -> None:
    search = CapacitySearch(start=1000, factor=2, max_rate=4000, bounds=Bounds())
    assert search.next(_result(1000, p99=500)) == (1000, 10.0)  # noisy: run it again
    assert search.next(_result(1000)) == (2000, 10.0)  # it passes: go on growing
    assert search.next(_result(2000, p99=500)) == (2000, 10.0)
    assert search.next(_result(2000, p99=500)) == (1500, 10.0)  # failed twice: bisect
    assert [r.passed for r in search.results] == [False, True, False, False]
    assert search.results[0].why.endswith("(repeating)")


def test_fixed_steps_are_judged_but_all_run() -> None:
    steps = Steps([(1000, 5), (2000, 5)], bounds=Bounds())
    assert steps.first() == (1000, 5)
    assert steps.next(_result(1000, confirmed=10)) == (2000, 5)
    assert steps.next(_result(2000)) is None
    assert [r.passed for r in steps.results] == [False, True]


def test_window_and_measure_sum_processes_over_their_own_times() -> None:
    # Two workers reporting at different moments; the step's window is 10..20 s.
    history = {
        "w1": [_snap(7, 0), _snap(10, 1000), _snap(13, 4000), _snap(19, 10000), _snap(22, 13000)],
        "w2": [_snap(8, 0), _snap(11, 2000, bucket=40), _snap(20, 20000, bucket=40)],
    }
    pairs = window(history, 10, 20)
    assert {k: (a["t"], b["t"]) for k, (a, b) in pairs.items()} == {
        "w1": (10, 19),
        "w2": (11, 20),
    }
    result = measure(1, 3000, pairs, BOUNDS_MS)
    assert result.published == pytest.approx(1000 + 2000)
    assert result.confirmed == result.published and result.drop_ratio == 0
    # w1 confirmed 9,000 in bucket 30 (1 ms), w2 18,000 in bucket 40 (10 ms): p50 is w2's.
    assert result.p50 == pytest.approx(BOUNDS_MS[40])
    assert result.p99 == pytest.approx(BOUNDS_MS[40])
    # A worker that reported only once in the window still counts, from its previous report.
    sparse = window({"w": [_snap(5, 0), _snap(15, 10000)]}, 10, 20)
    assert measure(1, 1000, sparse, BOUNDS_MS).published == pytest.approx(1000)
