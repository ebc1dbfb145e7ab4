#!/usr/bin/env python
"""Capacity per queue type: the load harness's capacity search, twice for each type.

For each ``--types`` (classic, quorum, stream) the search (``streamer loadtest --headless
--capacity``, the watcher reading ``--queues`` queues of that type) runs ``--runs`` times in a
row, and the table gives, per type, the highest rate that met the bounds in each run, their
spread (max / min - 1), and the confirm and end-to-end latency percentiles of the best step.
Each run's CSV and JSON go to ``--out`` (``<out>/capacity-<type>-<run>_capacity.json``).

Examples::

    .venv/bin/python bench/capacity_types.py                   # 3 types x 2 runs, ~15 minutes
    .venv/bin/python bench/capacity_types.py --types quorum --runs 1 --fail-on 'p99<50ms'
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TYPES = ("classic", "quorum", "stream")


def _search(args: argparse.Namespace, queue_type: str, run: int) -> dict[str, Any] | None:
    prefix = Path(args.out) / f"capacity-{queue_type}-{run}"
    streamer = shutil.which("streamer", path=str(Path(sys.executable).parent)) or "streamer"
    command = [
        streamer, "loadtest", "--headless", "-u", str(args.users), "--capacity",
        "--queue-type", queue_type, "--queues", str(args.queues),
        "--start-rate", str(args.start_rate), "--rate-factor", str(args.rate_factor),
        "--step-time", str(args.step_time), "--csv", str(prefix),
    ]  # fmt: skip
    if args.fail_on:
        command += ["--fail-on", args.fail_on]
    for option in args.publisher_option:
        command += ["--publisher-option", option]
    if args.url:
        command += ["--url", args.url]
    print(f"# {queue_type} run {run}: {' '.join(command[1:])}", flush=True)
    # (locust exits 1 when a step coalesced reports: a search's failing steps do)
    subprocess.run(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
    path = Path(f"{prefix}_capacity.json")
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", nargs="+", choices=TYPES, default=list(TYPES))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--queues", type=int, default=1)
    parser.add_argument("-u", "--users", type=int, default=50)
    parser.add_argument("--start-rate", type=float, default=8000)
    parser.add_argument("--rate-factor", type=float, default=1.2)
    parser.add_argument("--step-time", type=float, default=10)
    parser.add_argument("--fail-on", default="", help="the bounds (default: the harness's)")
    parser.add_argument(
        "--publisher-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a streamer setting for the harness's publishers (repeatable)",
    )
    parser.add_argument("--settle", type=float, default=10, help="s idle before each search")
    parser.add_argument("--url", default="", help="broker URL (default: $STREAMER_URL)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    rows = []
    for queue_type in args.types:
        results = []
        for run in range(1, args.runs + 1):
            time.sleep(args.settle)  # the broker finishes with the last search's queues
            results.append(_search(args, queue_type, run))
        rows.append((queue_type, results))
    print("\ncapacity per queue type (the highest rate meeting the bounds, per run)")
    print(
        f"{'type':<8} {'runs (confirmed reports/s)':<28} {'spread':>7}  "
        "best step: confirm p50/p90/p99/p99.9/max ms; end-to-end p99 ms; bounds"
    )
    for queue_type, results in rows:
        best = [r["result"] for r in results if r is not None and r["result"] is not None]
        rates = [b["confirmed"] for b in best]
        if len(rates) < len(results) or not rates:
            print(f"{queue_type:<8} a run found no passing rate: {rates}")
            continue
        spread = max(rates) / min(rates) - 1
        top = max(best, key=lambda b: b["confirmed"])
        latency = "/".join(f"{top[k]:.1f}" for k in ("p50", "p90", "p99", "p999", "max"))
        e2e = "-" if top["e2e_p99"] is None else f"{top['e2e_p99']:.1f}"
        shown = " and ".join(f"{r:,.0f}" for r in rates)
        bounds = ", ".join(results[0]["bounds"]) if results[0] else ""
        print(f"{queue_type:<8} {shown:<28} {spread:>7.1%}  {latency}; {e2e}; {bounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
