"""What one ``publish()`` call costs its caller: median and p99, broker up, down and blocked.

Both publishers are measured: the asyncio ``Publisher`` (the caller is a coroutine that yields
to the loop every ``--batch`` calls, as a task doing real work would) and the
``BackgroundPublisher`` (the caller is a plain thread; the loop runs in its own thread).
Every call is timed on its own with ``perf_counter_ns`` (the timer's ~50 ns included), for
reports built beforehand, over 1,000 tasks round-robin. "blocked" is a private RabbitMQ node
under a memory alarm, so the broker has sent ``connection.blocked``.

Memory is measured in a separate broker-down pass without per-call timing (a list of a
million timings would dominate it): traced allocations after warm-up.

    python bench/call_latency.py [--calls 1000000] [--url URL] [--no-blocked]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvloop

from streamer import BackgroundPublisher, Publisher, Report
from streamer.settings import DEFAULT_URL, mask_url

EXCHANGE = "streamer.bench.calls"


def reports(tasks: int = 1000) -> list[Report]:
    progress = {
        "step": "content",
        "items_total": 400,
        "items_done": 17,
        "size_total": 123_456_789,
        "size_done": 4_567_890,
        "details": "x" * 350,
    }
    return [
        Report(
            task_id=f"{t:08x}-bench",
            state="running",
            task_type="sync",
            progress_report=progress,
            tags=["pulp:repository:zoo"],
        )
        for t in range(tasks)
    ]


def summary(timings: list[int], stats: Any) -> dict[str, Any]:
    timings.sort()
    return {
        "calls": len(timings),
        "median_us": statistics.median(timings) / 1000,
        "p99_us": timings[int(len(timings) * 0.99)] / 1000,
        "max_us": timings[-1] / 1000,
        "stats": {
            "published": stats.published,
            "confirmed": stats.confirmed,
            "coalesced": stats.coalesced,
            "dropped": stats.dropped_by_reason,
        },
    }


async def measure_async(url: str, calls: int, batch: int, ready: Any = None) -> dict[str, Any]:
    batch_reports = reports()
    timings = [0] * calls
    clock = time.perf_counter_ns
    async with Publisher(url, EXCHANGE, connect_timeout=1.0) as pub:
        for r in batch_reports:  # warm-up: tasks seen, frames cached
            pub.publish(r)
        await pub.flush(10)
        if ready is not None:
            await ready(pub)
        publish = pub.publish
        for n in range(calls):
            r = batch_reports[n % 1000]
            t0 = clock()
            publish(r)
            timings[n] = clock() - t0
            if n % batch == batch - 1:
                await asyncio.sleep(0)
        await pub.flush(30)
        return summary(timings, pub.stats)


def measure_background(url: str, calls: int, batch: int, ready: Any = None) -> dict[str, Any]:
    batch_reports = reports()
    timings = [0] * calls
    clock = time.perf_counter_ns
    with BackgroundPublisher(url, EXCHANGE, connect_timeout=1.0, close_timeout=5) as pub:
        for r in batch_reports:
            pub.publish(r)
        pub.flush(10)
        if ready is not None:
            ready(pub)
        publish = pub.publish
        for n in range(calls):
            r = batch_reports[n % 1000]
            t0 = clock()
            publish(r)
            timings[n] = clock() - t0
            if n % batch == batch - 1:
                time.sleep(0)  # let the loop thread have the GIL, as real work would
        pub.flush(30)
        return summary(timings, pub.stats)


async def memory_growth(url: str, calls: int, batch: int) -> float:
    """Traced memory growth in MB over ``calls`` publishes (after a warm-up pass)."""
    batch_reports = reports()
    async with Publisher(url, EXCHANGE, connect_timeout=1.0) as pub:
        for r in batch_reports:
            pub.publish(r)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(calls):
            pub.publish(batch_reports[n % 1000])
            if n % batch == batch - 1:
                await asyncio.sleep(0)
        growth = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    return growth / 1e6


@contextmanager
def blocked_broker() -> Iterator[str]:
    """A private RabbitMQ node with a memory alarm raised: it blocks every publisher."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.broker import PrivateNode

    with PrivateNode(prefix="streamer-bench-blocked") as node:
        node.set_memory_alarm()
        yield node.url


async def until_blocked_async(pub: Publisher) -> None:
    deadline = time.monotonic() + 20
    while not pub.stats.dropped_by_reason["blocked"] and time.monotonic() < deadline:
        pub.publish(reports(1)[0])
        await asyncio.sleep(0.05)


def until_blocked(pub: BackgroundPublisher) -> None:
    deadline = time.monotonic() + 20
    while not pub.stats.dropped_by_reason["blocked"] and time.monotonic() < deadline:
        pub.publish(reports(1)[0])
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("STREAMER_URL", DEFAULT_URL))
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100, help="calls between two yields")
    parser.add_argument("--no-blocked", action="store_true", help="skip the blocked broker")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"amqp://guest:guest@127.0.0.1:{s.getsockname()[1]}/"
    results: dict[str, Any] = {}
    urls = [("up", args.url), ("down", down)]
    for label, url in urls:
        results[f"async {label}"] = uvloop.run(measure_async(url, args.calls, args.batch))
        results[f"background {label}"] = measure_background(url, args.calls, args.batch)
    if not args.no_blocked:
        with blocked_broker() as url:
            results["async blocked"] = uvloop.run(
                measure_async(url, args.calls, args.batch, until_blocked_async)
            )
            results["background blocked"] = measure_background(
                url, args.calls, args.batch, until_blocked
            )
    growth = uvloop.run(memory_growth(down, args.calls, args.batch))
    print(f"publish() call cost, {args.calls:,} calls each ({mask_url(args.url)})")
    print(f"{'publisher / broker':22} {'median µs':>10} {'p99 µs':>8} {'max µs':>9}  outcome")
    for label, r in results.items():
        outcome = {k: v for k, v in r["stats"].items() if k != "dropped"}
        drops = {k: v for k, v in r["stats"]["dropped"].items() if v}
        print(
            f"{label:22} {r['median_us']:10.2f} {r['p99_us']:8.2f} {r['max_us']:9.1f}  "
            f"{outcome} dropped={drops}"
        )
    print(f"memory growth over {args.calls:,} publishes, broker down: {growth:.3f} MB")
    results["memory_growth_mb_down"] = growth
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
