"""What one ``publish()`` call costs the caller: median and p99, broker up and down.

Every call is timed on its own with ``perf_counter_ns`` (the timer's own cost, ~50 ns, is
included), for reports built before timing, over 1,000 tasks round-robin. The caller yields
to the event loop every ``--batch`` calls, as a task doing real work would, so the writer
runs in between (its cost is the client CPU figure of ``throughput.py``, not the call's).
Memory is measured in a separate broker-down pass without per-call timing (whose own list
of timings would dominate): traced allocations after warm-up, over ``--calls`` publishes.

    python bench/call_latency.py [--calls 1000000] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import time
import tracemalloc
from typing import Any

import uvloop

from streamer import Publisher, Report
from streamer.settings import DEFAULT_URL, mask_url


def reports(tasks: int) -> list[Report]:
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


async def measure(url: str, calls: int, batch: int) -> dict[str, Any]:
    batch_reports = reports(1000)
    timings = [0] * calls
    clock = time.perf_counter_ns
    async with Publisher(url, "streamer.bench.calls", connect_timeout=1.0) as pub:
        for r in batch_reports:  # warm-up: tasks seen, frames cached
            pub.publish(r)
        await pub.flush(10)
        publish = pub.publish
        for n in range(calls):
            r = batch_reports[n % 1000]
            t0 = clock()
            publish(r)
            timings[n] = clock() - t0
            if n % batch == batch - 1:
                await asyncio.sleep(0)
        await pub.flush(30)
        stats = pub.stats
    timings.sort()
    return {
        "calls": calls,
        "median_us": statistics.median(timings) / 1000,
        "p99_us": timings[int(calls * 0.99)] / 1000,
        "max_us": timings[-1] / 1000,
        "stats": {
            "published": stats.published,
            "confirmed": stats.confirmed,
            "coalesced": stats.coalesced,
            "dropped": stats.dropped,
        },
    }


async def memory_growth(url: str, calls: int, batch: int) -> float:
    """Traced memory growth in MB over ``calls`` publishes (after a warm-up pass)."""
    batch_reports = reports(1000)
    async with Publisher(url, "streamer.bench.calls", connect_timeout=1.0) as pub:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("STREAMER_URL", DEFAULT_URL))
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100, help="calls between two yields")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"amqp://guest:guest@127.0.0.1:{s.getsockname()[1]}/"
    results: dict[str, Any] = {}
    for label, url in (("up", args.url), ("down", down)):
        results[label] = uvloop.run(measure(url, args.calls, args.batch))
    results["memory_growth_mb_down"] = uvloop.run(memory_growth(down, args.calls, args.batch))
    print(f"publish() call cost, {args.calls:,} calls each ({mask_url(args.url)})")
    print(f"{'broker':8} {'median µs':>10} {'p99 µs':>8} {'max µs':>9}  accounting")
    for label in ("up", "down"):
        r = results[label]
        print(
            f"{label:8} {r['median_us']:10.2f} {r['p99_us']:8.2f} {r['max_us']:9.1f}  {r['stats']}"
        )
    print(
        f"memory growth over {args.calls:,} publishes, broker down: "
        f"{results['memory_growth_mb_down']:.3f} MB"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
