"""The rate plans and their measurement (loadtest/capacity.py): no broker, no locust."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.capacity import (
    Bound,
    Bounds,
    CapacitySearch,
    StepResult,
    Steps,
    measure,
    parse_fail_on,
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
        p90=2.0,
        p99=p99,
        p999=p99,
        max=p99,
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
    assert search.next(_result(3000)) == (3000, 10.0)  # the best, run again
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


def test_the_best_stands_only_if_it_passes_again() -> None:
    # A lucky pass at 4,000 (the ceiling): run again at the end, it fails, and the search
    # bisects between it and the next best pass (2,000) instead of falling back to 2,000.
    search = CapacitySearch(start=1000, factor=2, max_rate=4000, refine=2, bounds=Bounds())
    assert search.next(_result(1000)) == (2000, 10.0)
    assert search.next(_result(2000)) == (4000, 10.0)
    assert search.next(_result(4000)) == (4000, 10.0)  # the ceiling passed: run it again
    assert search.next(_result(4000, p99=500)) == (3000, 10.0)  # failed: bisect below it
    assert search.next(_result(3000)) == (3500, 10.0)
    assert search.next(_result(3500, p99=500)) == (3500, 10.0)  # (a failure is repeated)
    assert search.next(_result(3500, p99=500)) == (3000, 10.0)  # the best, run again
    assert search.next(_result(3000, p99=20)) is None
    best = search.best
    assert best is not None and best.offered == 3000 and best.p99 == 20  # its last run
    offered = [r.offered for r in search.results]
    assert offered == [1000, 2000, 4000, 4000, 3000, 3500, 3500, 3000]
    unlucky = CapacitySearch(start=1000, factor=2, max_rate=2000, refine=0, bounds=Bounds())
    assert unlucky.next(_result(1000)) == (2000, 10.0)
    assert unlucky.next(_result(2000)) == (2000, 10.0)
    assert unlucky.next(_result(2000, p99=500)) == (1000, 10.0)  # no bisection asked for
    # Nothing passed twice in a row: step down from there, as from a failed start.
    assert unlucky.next(_result(1000, p99=500)) == (500, 10.0)
    assert unlucky.next(_result(500)) == (500, 10.0)  # the new best, run again
    assert unlucky.next(_result(500)) is None
    assert unlucky.best is not None and unlucky.best.offered == 500
    # Bisection goes on between the step-down's pass and the rejected rate; rechecks are
    # bounded, so a broker that passes nothing twice ends the search without a result.
    edge = CapacitySearch(start=1000, factor=2, refine=1, bounds=Bounds())
    assert edge.next(_result(1000)) == (2000, 10.0)
    assert edge.next(_result(2000, p99=500)) == (2000, 10.0)  # (a failure is repeated)
    assert edge.next(_result(2000, p99=500)) == (1500, 10.0)
    assert edge.next(_result(1500, p99=500)) == (1500, 10.0)
    assert edge.next(_result(1500, p99=500)) == (1000, 10.0)  # the best, run again
    assert edge.next(_result(1000, p99=500)) == (500, 10.0)  # no other pass: step down
    assert edge.next(_result(500)) == (750, 10.0)  # bisect between 500 and 1,000
    assert edge.next(_result(750)) == (750, 10.0)  # the best, run again
    assert edge.next(_result(750)) is None
    assert edge.best is not None and edge.best.offered == 750
    never = CapacitySearch(start=1000, factor=2, max_rate=1000, refine=0, bounds=Bounds())
    assert never.next(_result(1000)) == (1000, 10.0)
    assert never.next(_result(1000, p99=500)) == (500, 10.0)
    assert never.next(_result(500)) == (500, 10.0)
    assert never.next(_result(500, p99=500)) == (250, 10.0)
    assert never.next(_result(250)) == (250, 10.0)
    assert never.next(_result(250, p99=500)) is None  # two rechecks failed: no result
    assert never.best is None


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


def test_fail_on_reads_latencies_ratios_and_percentages() -> None:
    bounds = parse_fail_on("p99<50ms, drop<0.1%, reach>0.95, p99.9<=1.5s, e2e_max<800us")
    assert bounds == [
        Bound("p99", "<", 50.0),
        Bound("drop", "<", 0.001),
        Bound("reach", ">", 0.95),
        Bound("p99.9", "<=", 1500.0),
        Bound("e2e_max", "<", 0.8),
    ]
    assert str(bounds[0]) == "p99 < 50 ms" and str(bounds[1]) == "drop < 0.001"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("p98<50ms", "unknown metric 'p98'"),
        ("p99>50ms", "p99 takes a < bound"),
        ("reach<0.9", "reach takes a > bound"),
        ("p99<50min", "unknown unit 'min'"),
        ("drop<lots", "'lots' in 'drop<lots' is not a number"),
        ("p99=50", "is not METRIC<VALUE"),
        ("", "no bound given"),
    ],
)
def test_fail_on_names_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_fail_on(text)


def test_fail_on_replaces_a_default_and_adds_the_rest() -> None:
    bounds = Bounds(p99_ms=100, fail_on=tuple(parse_fail_on("p99<5ms,p99.9<10ms")))
    assert [str(b) for b in bounds.checks] == [
        "drop <= 0.001",
        "reach >= 0.95",
        "p99 < 5 ms",
        "p99.9 < 10 ms",
    ]
    ok = _result(1000, p99=4.0)
    assert ok.judged(bounds).passed
    slow = _result(1000, p99=5.0).judged(bounds)  # p99 < 5 is strict
    assert not slow.passed and slow.why == "p99 5.00 ms, not < 5"
    unwatched = _result(1000).judged(Bounds(fail_on=(Bound("e2e_p99", "<", 50.0),)))
    assert not unwatched.passed and "e2e_p99 not measured" in unwatched.why


def test_a_step_reports_p50_p90_p99_p999_and_max_within_two_percent() -> None:
    # 1,000 confirms: 990 at 1 ms, 9 at 20 ms, 1 at 700 ms.
    hist = LatencyHistogram()
    hist.observe(0.001, 990)
    hist.observe(0.020, 9)
    hist.observe(0.700)
    a = {**_snap(0.0, 0), "latency": [0] * LatencyHistogram.BUCKETS}
    b = {**_snap(10.0, 1000), "latency": list(hist.counts)}
    r = measure(1, 100, {"w": (a, b)}, BOUNDS_MS)
    for got, want in ((r.p50, 1.0), (r.p90, 1.0), (r.p99, 1.0), (r.p999, 20.0), (r.max, 700.0)):
        assert want <= got <= want * 1.02, (got, want)


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.floats(min_value=1e-5, max_value=50.0)),
        min_size=1,
        max_size=300,
    )
)
def test_master_and_two_workers_merge_exactly(observations: list[tuple[int, float]]) -> None:
    # Each process ships its bucket counts; the step figures from the three equal those of
    # one histogram that saw every observation.
    processes = [LatencyHistogram() for _ in range(3)]
    together = LatencyHistogram()
    for process, seconds in observations:
        processes[process].observe(seconds)
        together.observe(seconds)
    empty = {**_snap(0.0, 0), "latency": [0] * LatencyHistogram.BUCKETS}
    pairs = {
        name: (empty, {**_snap(10.0, hist.count), "latency": list(hist.counts)})
        for name, hist in zip(("master", "worker-1", "worker-2"), processes, strict=True)
    }
    merged = [sum(counts) for counts in zip(*(h.counts for h in processes), strict=True)]
    assert merged == together.counts
    one = {"all": (empty, {**_snap(10.0, together.count), "latency": together.counts})}
    a, b = measure(1, 100, pairs, BOUNDS_MS), measure(1, 100, one, BOUNDS_MS)
    assert (a.p50, a.p90, a.p99, a.p999, a.max) == (b.p50, b.p90, b.p99, b.p999, b.max)
