"""Soak: stream at a steady share of the broker's maximum rate for a long time and watch the
process's resident memory (RSS), file descriptors and threads. They must stay flat after
warm-up; anything that grows with time is a leak.

Not part of the test suite (it runs for ten minutes): ``make soak``, or

    .venv/bin/python bench/soak.py --rate 26000 --minutes 10 --json soak.json

``--rate`` defaults to 70% of the ~37,000 reports/s streamer reaches on this project's 2-core
machine (README, Performance). Reports go to a fresh exchange with one capped queue bound
``tasks.#`` (the broker drops its oldest messages; nobody consumes), so the broker routes and
stores every report as it would for a listener. The exit code is 1 if RSS grew by more than
``--max-growth-mb`` or the descriptor or thread count changed between the end of warm-up and
the end of the run, or if the accounting identity ever failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import aiormq
import psutil
import uvloop

from streamer import Publisher, Report
from streamer.settings import DEFAULT_URL, mask_url

MAX_RATE = 37_000  # reports/s, measured by bench/throughput.py on the 2-core machine


def sample(proc: psutil.Process, pub: Publisher, started: float) -> dict[str, Any]:
    stats = pub.stats
    return {
        "t": round(time.monotonic() - started, 1),
        "rss_mb": round(proc.memory_info().rss / 2**20, 1),
        "fds": proc.num_fds(),
        "threads": proc.num_threads(),
        "published": stats.published,
        "confirmed": stats.confirmed,
        "coalesced": stats.coalesced,
        "dropped": stats.dropped,
        "pending": stats.pending,
        "balanced": stats.balanced,
    }


async def soak(
    url: str, rate: int, seconds: float, warmup: float, every: float
) -> list[dict[str, Any]]:
    exchange = f"streamer.soak.{uuid.uuid4().hex[:8]}"
    admin = await aiormq.connect(url)
    channel = await admin.channel()
    await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    queue = await channel.queue_declare(
        "", exclusive=True, arguments={"x-max-length": 10_000, "x-overflow": "drop-head"}
    )
    await channel.queue_bind(queue.queue or "", exchange, routing_key="tasks.#")
    proc = psutil.Process()
    samples: list[dict[str, Any]] = []
    tasks = [f"soak-{n}" for n in range(1000)]
    try:
        async with Publisher(url, exchange) as pub:
            started = time.monotonic()
            sent, next_sample = 0, 0.0
            print(f"streaming {rate:,} reports/s for {seconds:.0f} s to {mask_url(url)}")
            print(
                f"{'t s':>7} {'RSS MB':>8} {'fds':>5} {'thr':>4} {'published':>11} "
                f"{'confirmed':>11} {'dropped':>8} {'pending':>8}"
            )
            while (now := time.monotonic() - started) < seconds:
                due = int(now * rate)
                while sent < due:  # every task in turn, like many workers at once
                    task = tasks[sent % len(tasks)]
                    pub.publish(
                        Report(
                            task_id=task,
                            state="running",
                            task_type="sync",
                            progress_report={"content": {"items_done": sent, "items_total": 10**9}},
                        )
                    )
                    sent += 1
                if now >= next_sample:
                    row = sample(proc, pub, started)
                    row["warm"] = now >= warmup
                    samples.append(row)
                    print(
                        f"{row['t']:>7} {row['rss_mb']:>8} {row['fds']:>5} {row['threads']:>4} "
                        f"{row['published']:>11,} {row['confirmed']:>11,} "
                        f"{row['dropped']:>8,} {row['pending']:>8,}",
                        flush=True,
                    )
                    next_sample += every
                await asyncio.sleep(0.005)
            await pub.flush(10)
            samples.append({**sample(proc, pub, started), "warm": True})
    finally:
        await admin.close()
    return samples


def verdict(samples: list[dict[str, Any]], max_growth_mb: float) -> tuple[bool, dict[str, Any]]:
    warm = [s for s in samples if s["warm"]]
    first, last = warm[0], warm[-1]
    summary = {
        "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
        "rss_min_max_mb": [min(s["rss_mb"] for s in warm), max(s["rss_mb"] for s in warm)],
        "fd_delta": last["fds"] - first["fds"],
        "thread_delta": last["threads"] - first["threads"],
        "always_balanced": all(s["balanced"] for s in samples),
        "rate_achieved": round(last["published"] / max(last["t"], 1e-9)),
        "confirmed_share": round(last["confirmed"] / max(last["published"], 1), 3),
    }
    ok = (
        summary["rss_growth_mb"] <= max_growth_mb
        and summary["fd_delta"] == 0
        and summary["thread_delta"] == 0
        and summary["always_balanced"]
    )
    return ok, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("STREAMER_URL") or DEFAULT_URL)
    parser.add_argument("--rate", type=int, default=int(MAX_RATE * 0.7), help="reports/s")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before judging")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--max-growth-mb", type=float, default=5.0)
    parser.add_argument("--json", help="write the samples and the verdict here")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    warmup = min(args.warmup, seconds / 2)
    samples = uvloop.run(soak(args.url, args.rate, seconds, warmup, args.every))
    ok, summary = verdict(samples, args.max_growth_mb)
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"rate": args.rate, "seconds": seconds, "summary": summary, "samples": samples},
                f,
                indent=1,
            )
    print("flat after warm-up" if ok else "NOT FLAT: see the samples above", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
