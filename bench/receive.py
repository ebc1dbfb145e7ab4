#!/usr/bin/env python
"""Receive benchmark: what the streamer receivers (dashboard, watch, listen) get and cost,
against the harness watcher, aio-pika, pika and a raw frame reader, in one run.

Two modes, interleaved round by round (round 1: every receiver attached, then every receiver
draining; round 2: the same again, ...), so a slow drift of the shared 2-core machine (broker,
publisher and receiver all run on it) hits every receiver alike. Tables show medians; ratios
are given of the medians and per round.

attached
    One ``streamer.Publisher`` (a separate process) publishes the workload at full speed
    (``--reports`` reports over ``--tasks`` tasks, ~600 B bodies, confirms, paced to the
    confirm window with ``throttle()`` as bench/throughput.py does) to a fresh exchange while
    one receiver is attached. Reported: received / published, gaps (per-task seq holes),
    receiver CPU per report (user+system of its process over the publishing phase and its
    catching up) and the publisher's rate, since a receiver on the same cores slows it.

drain
    ``--drain`` reports wait in a durable queue bound ``tasks.#`` (refilled for every run);
    the receiver connects, waits behind a gate (a single-active-consumer queue held by the
    parent) and drains it once the gate opens. Reported: reports/s and CPU per report; the
    raw reader (streamer.amqp, no_ack, counting only) is the ceiling.

The streamer commands run as themselves where they can; where a command cannot consume a
named queue (listen, watch in the drain) the child runs the command's own code on that queue
(see bench/receivers/children.py). ``--help`` lists what each receiver name runs.

Examples::

    .venv/bin/python bench/receive.py                                   # the issue's sizes
    .venv/bin/python bench/receive.py --reports 2000 --drain 5000 --repeat 1   # smoke
    .venv/bin/python bench/receive.py --receivers dashboard,watcher,raw --modes drain
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# clients/ and receivers/; streamer and loadtest from the run's snapshot (receivers/source.py)
# when the parent took one, else from this repository.
for _path in (BENCH_DIR, Path(os.environ.get("BENCH_RECEIVE_SOURCE") or REPO_ROOT)):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from receivers import DEFAULT_RECEIVERS, RECEIVERS, child_main  # noqa: E402
from throughput_broker import find_broker_pid, mask_url  # noqa: E402

MODES = ("attached", "drain")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=os.environ.get("STREAMER_URL", DEFAULT_URL))
    p.add_argument(
        "--receivers",
        default=",".join(DEFAULT_RECEIVERS),
        help="comma-separated, in run order; known: "
        + ", ".join(f"{k} ({v})" for k, v in RECEIVERS.items()),
    )
    p.add_argument("--modes", default=",".join(MODES), help="attached, drain or both")
    p.add_argument("--reports", type=int, default=200_000, help="attached: reports published")
    p.add_argument("--tasks", type=int, default=1_000, help="tasks the reports are spread over")
    p.add_argument("--drain", type=int, default=500_000, help="drain: reports in the queue")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds; tables show medians")
    p.add_argument("--window", type=int, default=1_000, help="publisher: throttle(window)")
    p.add_argument("--prefetch", type=int, default=1_000, help="peers and raw reader")
    p.add_argument(
        "--no-snapshot",
        dest="snapshot",
        action="store_false",
        help="run streamer from the working tree as it is at each start of a receiver, instead"
        "\nof from a copy taken when the run starts (commits land during long runs)",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="default: bench/results/receive-<time>.json"
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    args.receiver_list = [r.strip() for r in args.receivers.split(",") if r.strip()]
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [r for r in args.receiver_list if r not in RECEIVERS]
    if unknown:
        p.error(f"unknown receiver(s) {', '.join(unknown)}; choose from {', '.join(RECEIVERS)}")
    if not args.mode_list or set(args.mode_list) - set(MODES):
        p.error(f"--modes: choose from {', '.join(MODES)}")
    if min(args.reports, args.tasks, args.drain, args.repeat, args.window, args.prefetch) < 1:
        p.error("sizes, --repeat, --window and --prefetch must be >= 1")
    return args


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for pkg in ("streamer", "aio-pika", "aiormq", "pamqp", "pika", "msgspec", "uvloop", "aiohttp"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _say(result: dict[str, Any]) -> None:
    """One line per run, as it finishes."""
    if "error" in result:
        print(f"  FAILED: {result['error']}")
        if result.get("stderr_tail"):
            print("    " + result["stderr_tail"].replace("\n", "\n    "))
        return
    cpu = result.get("cpu_us_per_report")
    cpu_text = "-" if cpu is None else f"{cpu:.1f}"
    gaps = "-" if result.get("gaps") is None else f"{result['gaps']:,}"
    load = result.get("load") or {}
    other = load.get("foreign_cores")
    other_text = "" if other is None else f"; other processes {other:.2f} cores"
    if result["mode"] == "attached":
        print(
            f"  received {result['received']:,}/{result['published']:,} "
            f"({result['received_ratio'] * 100:.3f}%), gaps {gaps}, CPU {cpu_text} us/report; "
            f"publisher {result['publisher_rate']:,.0f}/s{other_text}"
        )
    else:
        print(
            f"  drained {result['received']:,}/{result['filled']:,} in "
            f"{result['elapsed_s']:.2f} s = {result['rate']:,.0f}/s, CPU {cpu_text} us/report"
            f" (filled at {result['fill_rate'] or 0:,.0f}/s){other_text}"
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from receivers import source
    from receivers.broker import Admin
    from receivers.feeder import Feeder
    from receivers.rounds import Context, attached, drain

    origin = {**source.origin(REPO_ROOT), "snapshot": args.snapshot}
    root = source.take(REPO_ROOT) if args.snapshot else REPO_ROOT

    sets = {}
    if "attached" in args.mode_list:
        sets["attached"] = args.reports
    if "drain" in args.mode_list:
        sets["drain"] = args.drain
    feeder_spec = {"url": args.url, "tasks": args.tasks, "sets": sets, "window": args.window}
    print(f"building {', '.join(f'{k} {v:,}' for k, v in sets.items())} reports ...", flush=True)
    t0 = time.perf_counter()
    feeder = Feeder(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "feeder",
            "--spec",
            json.dumps(feeder_spec),
        ]
    )
    print(f"  ready in {time.perf_counter() - t0:.1f} s: {feeder.sets}")
    admin = Admin(args.url)
    prefix = f"bench.receive.{os.getpid()}"
    ctx = Context(args.url, prefix, args.prefetch, admin, feeder, find_broker_pid(args.url), root)
    drain_exchange = f"{prefix}.drain"
    results: list[dict[str, Any]] = []
    try:
        if "drain" in args.mode_list:
            admin.declare_exchange(drain_exchange)
        for rnd in range(1, args.repeat + 1):
            for mode in args.mode_list:
                for name in args.receiver_list:
                    print(f"- [{rnd}/{args.repeat}] {mode} {name} ...", flush=True)
                    if mode == "attached":
                        result = attached(ctx, name, rnd)
                    else:
                        result = drain(ctx, name, rnd, args.drain, drain_exchange)
                    _say(result)
                    results.append(result)
    finally:
        if "drain" in args.mode_list:
            with contextlib.suppress(Exception):
                admin.delete_exchange(drain_exchange)
        admin.close()
        feeder.close()
        if args.snapshot:
            source.drop(root)
    return {"results": results, "sets": feeder.sets, "origin": origin}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, json.loads(args.spec))

    from receivers import report

    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    wall0 = time.perf_counter()
    print(
        f"broker {mask_url(args.url)}; modes {', '.join(args.mode_list)}; "
        f"attached {args.reports:,} reports, drain {args.drain:,}, over {args.tasks:,} tasks; "
        f"{args.repeat} round{'s' if args.repeat > 1 else ''}; "
        f"receivers {', '.join(args.receiver_list)}"
    )
    ran = run(args)
    results = ran["results"]
    names = args.receiver_list
    summaries = {m: report.summarize(results, m, names) for m in args.mode_list}
    rat = {m: report.ratios(results, m, summaries[m], report.CEILINGS[m]) for m in args.mode_list}
    if "attached" in summaries:
        print("\nattached: one publisher at full speed, one receiver attached (medians)\n")
        report.print_attached(summaries["attached"], rat["attached"])
    if "drain" in summaries:
        print(f"\ndrain: {args.drain:,} reports waiting in a queue (medians)\n")
        report.print_drain(summaries["drain"], rat["drain"])
    report.print_ratios(rat)
    report.print_versions(results, ran["origin"])
    checks = report.acceptance(summaries.get("attached", {}), summaries.get("drain", {}), rat)
    report.print_checks(checks)
    report.print_legend(names)

    wall = time.perf_counter() - wall0
    json_path = args.json or RESULTS_DIR / f"receive-{time.strftime('%Y%m%d-%H%M%S')}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "started_at": started_at,
        "wall_s": wall,
        "url": mask_url(args.url),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "sizes": {"reports": args.reports, "tasks": args.tasks, "drain": args.drain},
        "repeat": args.repeat,
        "window": args.window,
        "prefetch": args.prefetch,
        "workload_sets": ran["sets"],
        "code": ran["origin"],
        "receivers": {n: RECEIVERS[n] for n in names},
        "host": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "versions": _versions(),
        },
        "results": results,
        "medians": summaries,
        "ratios": rat,
        "acceptance": checks,
    }
    json_path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nJSON written to {json_path}\nwall time {wall:.1f} s")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
