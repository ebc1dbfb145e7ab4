"""What one ``publish()`` call costs its caller when the broker cannot take the report: lost
connection, no broker at all, broker blocked (pytest-benchmark).

These used to be wall-clock assertions (every call under 50 ms) inside three integration
tests; the tests now only check that a call never blocks (a bound of a second), and the cost
is measured here, where ``make bench`` compares it with the saved baseline:

- ``test_publish_during_outage``: tests/integration/test_publisher.py
  ``test_outage_drops_and_never_blocks`` (asyncio publisher, the proxy to the broker stopped);
- ``test_background_publish_broker_down``: tests/integration/test_embed.py
  ``test_broker_down_never_raises`` (BackgroundPublisher, nothing listening);
- ``test_publish_blocked``: tests/integration/test_blocked.py (asyncio publisher, a private
  node under a memory alarm).

The asyncio publisher with no broker ever reachable is ``test_publish_broker_down`` in
test_publish_call.py; per-call median, p99 and max over a million calls, for both publishers
broker up, down and blocked, come from ``python bench/call_latency.py``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import uvloop
from call_latency import blocked_broker, reports, until_blocked_async  # bench/ is on sys.path
from pytest_benchmark.fixture import BenchmarkFixture

from streamer import BackgroundPublisher, Publisher
from streamer.settings import DEFAULT_URL

EXCHANGE = "streamer.bench.calls"
REPORTS = reports()


def _tests(name: str) -> ModuleType:
    """``tests.<name>`` from this checkout (the fault proxy, the shared helpers)."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"tests.{name}")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


def _round_robin(pub: Publisher | BackgroundPublisher) -> Callable[[], None]:
    """One publish() a call, over 1,000 tasks' reports built beforehand."""
    state = {"n": 0}

    def call() -> None:
        n = state["n"] = (state["n"] + 1) % len(REPORTS)
        pub.publish(REPORTS[n])

    return call


def test_publish_during_outage(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop
) -> None:
    """publish() once the connection is lost: the report is dropped (``disconnected``)."""
    proxy = _tests("proxy").Proxy(os.environ.get("STREAMER_URL") or DEFAULT_URL)
    loop.run_until_complete(proxy.start())
    pub = Publisher(proxy.url, EXCHANGE, reconnect_min=0.05, reconnect_max=0.2)
    loop.run_until_complete(pub.start())
    try:
        for r in REPORTS:  # every task seen once: its routing key and frames are cached
            pub.publish(r)
        assert loop.run_until_complete(pub.flush(30))
        loop.run_until_complete(proxy.stop())
        loop.run_until_complete(asyncio.sleep(0.2))
        before = pub.stats.dropped_by_reason["disconnected"]
        benchmark(_round_robin(pub))
        assert pub.stats.dropped_by_reason["disconnected"] > before
        assert pub.stats.balanced
    finally:
        loop.run_until_complete(pub.close())


def test_background_publish_broker_down(benchmark: BenchmarkFixture) -> None:
    """BackgroundPublisher.publish() from a plain thread, nothing listening at the URL."""
    url = f"amqp://guest:guest@127.0.0.1:{_tests('helpers').free_port()}/"
    with BackgroundPublisher(url, EXCHANGE, connect_timeout=0.3, close_timeout=0.5) as pub:
        benchmark(_round_robin(pub))
        assert pub.flush(5)
        stats = pub.stats
    assert stats.published > 0 and stats.confirmed == 0 and stats.balanced


def test_publish_blocked(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """publish() while the broker has blocked the connection: dropped (``blocked``)."""
    with blocked_broker() as url:
        pub = Publisher(url, EXCHANGE, close_timeout=1)
        loop.run_until_complete(pub.start())
        try:
            loop.run_until_complete(until_blocked_async(pub))
            assert pub.stats.dropped_by_reason["blocked"] > 0, "the broker never blocked us"
            benchmark(_round_robin(pub))
            assert pub.stats.balanced
        finally:
            loop.run_until_complete(pub.close())
