"""The metric set is closed, its values come from Stats/Board, and series stay bounded."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamer.board import Board
from streamer.consumer import COUNTERS
from streamer.metrics import METRIC_NAMES, BoardCollector, PublisherCollector
from streamer.report import Report
from streamer.stats import DROP_REASONS, LatencyHistogram, Stats


class _Fake:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats


def _scrape(*collectors: object) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def _stats() -> Stats:
    hist = LatencyHistogram()
    hist.observe(0.002, 7)
    hist.observe(0.05, 3)
    dropped = dict.fromkeys(DROP_REASONS, 0) | {"blocked": 4, "overflow": 1}
    return Stats(
        published=100,
        confirmed=80,
        coalesced=10,
        dropped=5,
        dropped_by_reason=dropped,
        pending=5,
        resent=2,
        reconnects=1,
        connections=1,
        channels=2,
        confirm_latency_counts=tuple(hist.counts),
        confirm_latency_sum=hist.total,
    )


def test_publisher_metrics_mirror_stats() -> None:
    s = _scrape(PublisherCollector(_Fake(_stats())))
    assert s["streamer_reports_published_total"][()] == 100
    assert s["streamer_reports_confirmed_total"][()] == 80
    assert s["streamer_reports_coalesced_total"][()] == 10
    dropped = s["streamer_reports_dropped_total"]
    assert {dict(k)["reason"] for k in dropped} == set(DROP_REASONS)
    assert dropped[(("reason", "blocked"),)] == 4
    assert sum(dropped.values()) == 5
    assert s["streamer_reports_pending"][()] == 5
    assert s["streamer_channels_open"][()] == 2
    assert s["streamer_reconnects_total"][()] == 1
    # The identity holds in the exposition itself.
    assert s["streamer_reports_published_total"][()] == (
        s["streamer_reports_confirmed_total"][()]
        + s["streamer_reports_coalesced_total"][()]
        + sum(dropped.values())
        + s["streamer_reports_pending"][()]
    )


def test_latency_histogram_buckets_are_exact_and_cumulative() -> None:
    buckets = _scrape(PublisherCollector(_Fake(_stats())))[
        "streamer_confirm_latency_seconds_bucket"
    ]
    by_le = sorted((float(dict(k)["le"]), v) for k, v in buckets.items())
    counts = [v for _, v in by_le]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert by_le[-1] == (float("inf"), 10)
    # 7 samples at 2 ms are at or below the 3.16 ms edge; the 3 at 50 ms only from 100 ms up.
    edge_1ms = next(v for b, v in by_le if 0.0009 < b < 0.0011)
    edge_3ms = next(v for b, v in by_le if 0.0025 < b < 0.004)
    edge_31ms = next(v for b, v in by_le if 0.025 < b < 0.04)
    edge_100ms = next(v for b, v in by_le if 0.09 < b < 0.11)
    assert (edge_1ms, edge_3ms, edge_31ms, edge_100ms) == (0, 7, 7, 10)


def test_every_exposed_family_is_documented() -> None:
    board = Board()
    board.apply(_progress("t", 3), now=2.0)
    s = _scrape(PublisherCollector(_Fake(_stats())), BoardCollector(board, {}))
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", name) for name in s}
    assert families == set(METRIC_NAMES)


def _progress(task_id: str, done: int, state: str = "running", seq: int = 1) -> Report:
    return Report(
        task_id=task_id,
        state=state,
        seq=seq,
        progress_report={"sync": {"items_done": done, "items_total": 10}},
    )


def test_board_metrics() -> None:
    board = Board()
    board.apply(_progress("a", 5, seq=1), now=10.0)
    board.apply(_progress("a", 5, seq=1), now=10.0)  # duplicate
    board.apply(_progress("b", 10, state="finished", seq=3), now=10.0)  # 2 missing
    board.apply(Report(task_id="c", state="waiting", seq=1, sent_at=9.5), now=10.0)
    counters = dict.fromkeys(COUNTERS, 0) | {"not_json": 3}
    s = _scrape(BoardCollector(board, counters))
    tasks = {dict(k)["state"]: v for k, v in s["streamer_board_tasks"].items()}
    assert tasks["running"] == 1 and tasks["finished"] == 1 and tasks["waiting"] == 1
    assert s["streamer_received_reports_total"][()] == 4
    assert s["streamer_received_ignored_total"][(("reason", "duplicate"),)] == 1
    assert s["streamer_received_malformed_total"][(("kind", "not_json"),)] == 3
    assert s["streamer_board_gaps"][()] == 2
    # Only active tasks with known progress get a series.
    assert s["streamer_task_progress_ratio"] == {(("task_id", "a"),): 0.5}
    assert s["streamer_end_to_end_latency_seconds_count"][()] == 1
    assert s["streamer_end_to_end_latency_seconds_sum"][()] == pytest.approx(0.5)


def test_progress_series_are_capped_to_the_most_recent() -> None:
    board = Board(max_tasks=10_000)
    for n in range(1_000):
        board.apply(_progress(f"t{n}", 1), now=float(n))
    s = _scrape(BoardCollector(board, max_task_series=25))
    series = {dict(k)["task_id"] for k in s["streamer_task_progress_ratio"]}
    assert series == {f"t{n}" for n in range(975, 1_000)}


def test_negative_series_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="max_task_series"):
        BoardCollector(Board(), max_task_series=-1)
