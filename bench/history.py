#!/usr/bin/env python
"""History benchmark: what keeping the exchange's history costs, and how fast a dashboard
started late reads it.

cost
    One ``streamer.Publisher`` publishes ``--reports`` reports (``--tasks`` tasks, ~600 B,
    confirms, paced to the confirm window as bench/throughput.py does) at full speed to a
    fresh exchange with one capped queue bound (a live viewer's), once with the history off
    and once with it on (the broker then also writes every report to a stream on disk), the
    order alternating round by round. Reported: the publisher's rate, and the broker's CPU
    per report (its process, sampled around the publishing).

replay
    ``--replay`` reports are published into a fresh exchange's history; then ``streamer
    dashboard`` is started (its own process, as a user starts it) and asked for its summary
    until it has caught up with the history and folded every report. Reported: time from
    start to a complete board, folding rate (reports over the time from its first to its
    last report), and the dashboard's CPU per report. ``--repeat`` dashboards read the same
    history one after the other, each followed by a raw reader (streamer.receiver on the
    stream, uvloop, the dashboard's read settings, counting only): what the broker serves a
    reader whose folding costs nothing.

Examples::

    .venv/bin/python bench/history.py                      # 200,000 x 3 rounds; 1,000,000
    .venv/bin/python bench/history.py --reports 2000 --replay 5000 --repeat 1   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
BENCH_DIR = Path(__file__).resolve().parent
for _path in (BENCH_DIR, BENCH_DIR.parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from receivers.broker import CAPPED, Admin  # noqa: E402
from receivers.feeder import ReportSet, build, publish_all  # noqa: E402
from receivers.launch import Dashboard  # noqa: E402
from throughput_broker import find_broker_pid, mask_url  # noqa: E402

from streamer import history  # noqa: E402
from streamer.settings import Settings  # noqa: E402

HISTORY_BYTES = 4 * 10**9  # room for the replay set, whatever its body size


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=DEFAULT_URL, help="broker URL (default: the local one)")
    p.add_argument("--tasks", type=int, default=1_000, help="tasks of each workload")
    p.add_argument("--reports", type=int, default=200_000, help="cost: reports per run")
    p.add_argument("--replay", type=int, default=1_000_000, help="replay: reports in history")
    p.add_argument("--repeat", type=int, default=3, help="cost rounds; replay dashboards")
    p.add_argument("--window", type=int, default=1_000, help="publisher's confirm window")
    p.add_argument("--parts", default="cost,replay", help="which parts to run (default: both)")
    p.add_argument("--json", type=Path, help="write the figures here")
    return p.parse_args(argv)


class BrokerCpu:
    """The broker's CPU seconds (user+system), when its process is on this machine."""

    def __init__(self, url: str) -> None:
        import psutil

        pid = find_broker_pid(url)
        self.proc = psutil.Process(pid) if pid else None

    def __call__(self) -> float | None:
        if self.proc is None:
            return None
        t = self.proc.cpu_times()
        return float(t.user + t.system)


def cost_run(args: argparse.Namespace, rs: ReportSet, on: bool, cpu: BrokerCpu) -> dict[str, Any]:
    """One publishing run, the history on or off; the exchange and queues deleted after."""
    exchange = f"bench.history.{uuid.uuid4().hex[:8]}"
    queue = f"{exchange}.viewer"
    settings = Settings(url=args.url, exchange=exchange)
    admin = Admin(args.url)
    try:
        admin.declare_exchange(exchange)
        admin.channel.queue_declare(queue, durable=True, arguments=CAPPED)
        admin.channel.queue_bind(queue, exchange, routing_key="tasks.#")
        if on:
            asyncio.run(history.enable(settings, 3600, HISTORY_BYTES))
        before = cpu()
        result = asyncio.run(publish_all(args.url, exchange, rs, args.window))
        after = cpu()
        if before is not None and after is not None and result["confirmed"]:
            result["broker_us_per_report"] = (after - before) / result["confirmed"] * 1e6
        result["history"] = on
        return result
    finally:
        if on:
            asyncio.run(history.disable(settings))
        admin.channel.queue_delete(queue)
        admin.delete_exchange(exchange)
        admin.close()


def replay_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fill one history with the replay set, then start dashboards on it one by one."""
    exchange = f"bench.history.{uuid.uuid4().hex[:8]}"
    settings = Settings(url=args.url, exchange=exchange)
    asyncio.run(history.enable(settings, 3600, HISTORY_BYTES))
    results = []
    try:
        rs = build(args.tasks, args.replay)
        filled = asyncio.run(publish_all(args.url, exchange, rs, args.window))
        del rs
        expected = filled["confirmed"]  # (the stream's offsets also count a few markers)
        print(
            f"history filled: {expected:,} reports at {filled['rate']:,.0f}/s "
            f"({filled['coalesced']:,} coalesced)",
            flush=True,
        )
        for n in range(args.repeat):
            result = replay_once(args, exchange, expected)
            result["raw_rate"] = uvloop.run(raw_read(settings, expected))
            results.append(result)
            r = results[-1]
            print(
                f"  dashboard {n + 1}: complete board in {r['complete_s']:.1f} s, folding "
                f"{r['fold_rate']:,.0f} reports/s, {r['cpu_us_per_report']:.1f} µs CPU/report;"
                f" raw reader {r['raw_rate']:,.0f}/s",
                flush=True,
            )
    finally:
        asyncio.run(history.disable(settings))
        admin = Admin(args.url)
        admin.delete_exchange(exchange)
        admin.close()
    return results


async def raw_read(settings: Settings, expected: int) -> float:
    """Reports/s of a reader that only counts (first to last delivery), on the dashboard's
    event loop (uvloop) with its read settings: what the broker serves when folding costs
    nothing."""
    from streamer.receiver import VIEW_GATHER, Receiver

    done = asyncio.Event()
    first: list[float] = []

    def count(deliveries: list[Any]) -> None:
        if not first:
            first.append(time.monotonic())
        if receiver.received >= expected:
            done.set()

    receiver = Receiver(
        count,
        settings=settings,
        stream=history.stream_name(settings),
        offset="first",
        gather=VIEW_GATHER,
    )
    reading = asyncio.ensure_future(receiver.run())
    async with asyncio.timeout(600):
        await done.wait()
    elapsed = time.monotonic() - first[0]
    receiver.stop()
    await reading
    return expected / elapsed


def replay_once(args: argparse.Namespace, exchange: str, expected: int) -> dict[str, Any]:
    """Start a dashboard on the filled history; time it until its board is complete."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        dash = Dashboard("dashboard", {"url": args.url, "exchange": exchange}, Path(tmp))
        first: float | None = None
        try:
            while True:
                assert dash.alive(), dash.stderr_tail()
                try:
                    summary = dash._get("/api/tasks?limit=1")["summary"]
                except OSError:
                    summary = None
                now = time.monotonic()
                if summary is not None:
                    if first is None and summary["received"]:
                        first = now
                    if summary["replaying"] is None and summary["received"] >= expected:
                        break
                if now - started > 600:
                    raise TimeoutError(f"board incomplete after 600 s: {summary}")
                time.sleep(0.02)
            complete = now - started
            cpu = dash.cpu()
            final = dash.final()
        finally:
            dash.stop()
    assert first is not None
    return {
        "reports": expected,
        "received": final["received"],
        "gaps": final["gaps"],
        "tasks": final["tasks"],
        "complete_s": complete,
        "fold_s": max(complete - (first - started), 0.02),
        "fold_rate": expected / max(complete - (first - started), 0.02),  # (one poll)
        "cpu_us_per_report": cpu / expected * 1e6,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"broker {mask_url(args.url)}; cost: {args.reports:,} reports x {args.repeat} rounds")
    cpu = BrokerCpu(args.url)
    rs = build(args.tasks, args.reports)
    rounds = []
    parts = set(args.parts.split(","))
    for n in range(args.repeat if "cost" in parts else 0):
        order = (False, True) if n % 2 == 0 else (True, False)
        runs = {on: cost_run(args, rs, on, cpu) for on in order}
        ratio = runs[True]["rate"] / runs[False]["rate"]
        rounds.append({"off": runs[False], "on": runs[True], "ratio": ratio})
        print(
            f"  round {n + 1}: off {runs[False]['rate']:,.0f}/s, on {runs[True]['rate']:,.0f}/s "
            f"({ratio:.2f}x); broker CPU/report off "
            f"{runs[False].get('broker_us_per_report', 0):.1f} µs, on "
            f"{runs[True].get('broker_us_per_report', 0):.1f} µs",
            flush=True,
        )
    del rs
    replays = replay_runs(args) if "replay" in parts else []

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    summary = {
        "publisher_rate_off": med([r["off"]["rate"] for r in rounds]),
        "publisher_rate_on": med([r["on"]["rate"] for r in rounds]),
        "ratio_on_off": med([r["ratio"] for r in rounds]),
        "broker_us_off": med([r["off"].get("broker_us_per_report", 0.0) for r in rounds]),
        "broker_us_on": med([r["on"].get("broker_us_per_report", 0.0) for r in rounds]),
        "replay_reports": replays[0]["reports"] if replays else 0,
        "complete_s": med([r["complete_s"] for r in replays]),
        "fold_rate": med([r["fold_rate"] for r in replays]),
        "dashboard_us_per_report": med([r["cpu_us_per_report"] for r in replays]),
        "raw_rate": med([r["raw_rate"] for r in replays]),
        "fold_vs_raw": med([r["fold_rate"] / r["raw_rate"] for r in replays]),
        "gaps": max((r["gaps"] for r in replays), default=0),
    }
    print()
    if rounds:
        print(
            f"publisher with the history on: {summary['publisher_rate_on']:,.0f}/s vs off "
            f"{summary['publisher_rate_off']:,.0f}/s = {summary['ratio_on_off']:.2f}x (median of "
            f"rounds); broker CPU per report {summary['broker_us_off']:.1f} -> "
            f"{summary['broker_us_on']:.1f} µs"
        )
    if replays:
        print(
            f"dashboard started after {summary['replay_reports']:,} reports: complete board in "
            f"{summary['complete_s']:.1f} s, folding {summary['fold_rate']:,.0f} reports/s "
            f"(target 50,000: {'PASS' if summary['fold_rate'] >= 50_000 else 'MISS'}), "
            f"{summary['dashboard_us_per_report']:.1f} µs CPU/report, {summary['gaps']} gaps; "
            f"the raw reader read {summary['raw_rate']:,.0f}/s (dashboard "
            f"{summary['fold_vs_raw']:.2f}x)"
        )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": rounds,
                                         "replays": replays}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
