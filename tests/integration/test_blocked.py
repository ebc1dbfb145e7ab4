"""A broker resource alarm (connection.blocked): drops counted, publish() never blocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from streamer import Publisher, Report
from tests.broker import PrivateNode


@pytest.fixture(scope="module")
def node() -> Iterator[PrivateNode]:
    with PrivateNode(prefix="streamer-blocked") as n:
        yield n


async def test_blocked_connection_drops_and_recovers(node: PrivateNode) -> None:
    async with Publisher(node.url, "streamer.blocked", close_timeout=1) as pub:
        pub.publish(Report(task_id="b", state="running"))
        assert await pub.flush(10)
        await asyncio.to_thread(node.set_memory_alarm)
        worst, n = 0.0, 0
        deadline = time.monotonic() + 20
        while not pub.stats.dropped_by_reason["blocked"] and time.monotonic() < deadline:
            for _ in range(100):
                t0 = time.perf_counter()
                pub.publish(Report(task_id=f"b{n % 10}", state="running"))
                worst = max(worst, time.perf_counter() - t0)
                n += 1
            await asyncio.sleep(0.01)
        assert pub.stats.dropped_by_reason["blocked"] > 0, "the broker never blocked us"
        # Only real blocking (waiting for the broker to unblock) fails here; what a call
        # costs while blocked is measured by bench/test_call_timings.py.
        assert worst < 1.0, f"publish() blocked for {worst * 1000:.0f} ms while blocked"
        assert pub.stats.balanced
        await asyncio.to_thread(node.clear_memory_alarm)
        deadline = time.monotonic() + 20
        confirmed = pub.stats.confirmed
        while pub.stats.confirmed <= confirmed + 1 and time.monotonic() < deadline:
            pub.publish(Report(task_id="after", state="running"))
            await asyncio.sleep(0.05)
        assert pub.stats.confirmed > confirmed + 1, "publishing did not resume after unblock"
        assert pub.stats.balanced
