"""Micro benchmarks (pytest-benchmark) of the publisher's hot path.

Run with ``make bench`` (saved and compared runs) or ``pytest bench/ --benchmark-only``.
``make bench-smoke`` runs each once, untimed, to prove they still work.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import pytest
import uvloop
from call_latency import reports  # bench/ is on sys.path for its own tests
from pytest_benchmark.fixture import BenchmarkFixture

from streamer import BackgroundPublisher, Publisher, encode, routing_key
from streamer.frames import Framer
from streamer.handoff import encode_handoff
from streamer.settings import DEFAULT_URL

REPORTS = reports()  # the same reports as call_latency.py measures


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


def _started(loop: asyncio.AbstractEventLoop, url: str) -> Publisher:
    pub = Publisher(url, "streamer.bench.micro", connect_timeout=0.5, max_pending=10**6)
    loop.run_until_complete(pub.start())
    for r in REPORTS:  # every task seen once: its routing key and frames are cached
        pub.publish(r)
    return pub


def _round_robin(pub: Publisher | BackgroundPublisher) -> object:
    state = {"n": 0}

    def call() -> None:
        n = state["n"] = (state["n"] + 1) % 1000
        pub.publish(REPORTS[n])

    return call


def test_encode_report(benchmark: BenchmarkFixture) -> None:
    assert len(benchmark(encode, REPORTS[0])) > 500


def test_encode_unsequenced(benchmark: BenchmarkFixture) -> None:
    """The background publisher's caller-side encode (seq is spliced in on the loop; the name
    predates streamer.handoff and is kept for the saved baseline)."""
    item = benchmark(encode_handoff, REPORTS[0], 1_700_000_000.0, 1 << 20)
    assert item.body[item.seq_at : item.seq_at + 1] == b"0"


def test_routing_key(benchmark: BenchmarkFixture) -> None:
    assert benchmark(routing_key, "0f3c9a8e-0d5e-4c1e-9f6e-1b2c3d4e5f60").startswith("tasks.")


def test_frames_of_one_report(benchmark: BenchmarkFixture) -> None:
    framer = Framer(exchange="streamer", app_id="streamer", fingerprint={"host": "h", "pid": 1})
    task = framer.task(1, "tasks.t", "t")
    body = encode(REPORTS[0])

    def build() -> int:
        parts: list[bytes] = []
        framer.message(parts, 1, task, "running", 7, b"0123456789ab-1f", 1_700_000_000, body)
        return len(parts)

    assert benchmark(build) >= 3


def test_publish_broker_down(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """publish() while disconnected: validate, stamp, encode, count the drop."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"amqp://guest:guest@127.0.0.1:{s.getsockname()[1]}/"
    pub = _started(loop, url)
    benchmark(_round_robin(pub))
    assert pub.stats.dropped == pub.stats.published
    loop.run_until_complete(pub.close())


def test_background_publish_call(benchmark: BenchmarkFixture) -> None:
    """BackgroundPublisher.publish() from a plain thread, broker up: validate, encode, hand
    over to the loop thread (what a locust user or a Celery task pays per report)."""
    with BackgroundPublisher(
        os.environ.get("STREAMER_URL") or DEFAULT_URL, "streamer.bench.micro", max_pending=10**6
    ) as pub:
        benchmark(_round_robin(pub))
        assert pub.flush(timeout=30)
        stats = pub.stats
    assert stats.balanced and stats.dropped == 0


def test_publish_broker_up_coalescing(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """publish() while connected and the loop is busy elsewhere: each call supersedes the
    task's waiting report (the buffer path under pressure)."""
    pub = _started(loop, os.environ.get("STREAMER_URL") or DEFAULT_URL)
    benchmark(_round_robin(pub))
    assert pub.stats.balanced and pub.stats.dropped == 0
    loop.run_until_complete(pub.close())
