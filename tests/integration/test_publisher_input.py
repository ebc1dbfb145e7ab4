"""Bad input raises a clear error before anything is enqueued or counted."""

from __future__ import annotations

from typing import Any

import pytest

from streamer import InvalidReport, Publisher, Report


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (Report(task_id="a.b", state="running"), "'.'"),
        (Report(task_id="", state="running"), "must not be empty"),
        (Report(task_id="x", state="exploded"), "unknown state 'exploded'"),  # type: ignore[arg-type]
        (Report(task_id="x", state="running", progress_report={"o": object()}), "not serialisable"),
        (
            Report(task_id="x", state="running", progress_report={"blob": "x" * 5000}),
            "limit \\(max_body\\) is 4096",
        ),
        ({"task_id": "x", "state": "running"}, "takes a streamer.Report, got dict"),
    ],
)
async def test_bad_reports_refused(
    broker_url: str, exchange: str, report: Any, message: str
) -> None:
    async with Publisher(broker_url, exchange, max_body=4096) as pub:
        with pytest.raises(InvalidReport, match=message):
            pub.publish(report)
        stats = pub.stats
        assert (stats.published, stats.pending, stats.dropped) == (0, 0, 0)
        pub.publish(Report(task_id="x", state="running"))
        assert await pub.flush(5)
        assert pub.stats.confirmed == 1
        assert pub.stats.published == 1


async def test_publish_before_start_is_a_usage_error(exchange: str) -> None:
    pub = Publisher(exchange=exchange)
    with pytest.raises(RuntimeError, match="not started"):
        pub.publish(Report(task_id="x", state="running"))


async def test_publish_after_close_is_counted_not_raised(broker_url: str, exchange: str) -> None:
    async with Publisher(broker_url, exchange) as pub:
        pass
    pub.publish(Report(task_id="x", state="running"))
    assert pub.stats.dropped_by_reason["closed"] == 1
    assert pub.stats.balanced
    await pub.close()  # idempotent


async def test_finished_tasks_are_forgotten_first(broker_url: str, exchange: str) -> None:
    """max_tasks bounds what is remembered; active tasks keep their sequence."""
    async with Publisher(broker_url, exchange, max_tasks=10) as pub:
        for t in range(5):
            pub.publish(Report(task_id=f"active{t}", state="running"))
        for t in range(50):
            pub.publish(Report(task_id=f"done{t}", state="finished"))
            if t % 7 == 0:
                assert await pub.flush(5)  # some final reports confirmed, some not
        assert len(pub._tasks) <= 10
        assert all(f"active{t}" in pub._tasks for t in range(5))
        assert await pub.flush(5)
        assert pub._tasks["active0"].seq == 1
