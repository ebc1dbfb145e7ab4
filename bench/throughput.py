#!/usr/bin/env python
"""End-to-end publisher throughput: streamer against common Python AMQP clients.

Every client publishes the same prebuilt task reports (same bytes, same order)
to a topic exchange with publisher confirms on, and each runs in its own fresh
subprocess so that the CPU time we charge to it (user+sys of the child,
publish phase only) is not polluted by the other clients, the parent, imports
or connection setup.

The ``blaster`` client is a reference, not a product: streamer's bare AMQP
connection (no publisher, no buffer) writing pre-encoded frames in batches. It
shows roughly the rate the broker allows on this machine, i.e. the ceiling the
real clients are measured against.

The machine is shared with the broker and noisy (one run per client swings
+-30%), so the clients run in ``--repeat`` interleaved rounds and the table
shows medians; the ratios are printed per round as well, to show the spread.

Examples::

    .venv/bin/python bench/throughput.py                       # full workload, 3 rounds
    .venv/bin/python bench/throughput.py --tasks 5 --reports 20 --repeat 1  # smoke run
    .venv/bin/python bench/throughput.py --clients blaster,aiormq-pipelined
    .venv/bin/python bench/throughput.py --clients blaster,streamer --streamer-option channels=1
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

# Next to this file: clients/ (one module per client library, the registry in __init__),
# throughput_broker.py (queue fixture, broker pid) and throughput_report.py (medians, ratios,
# tables). Run as a script (the children are too) bench/ is already first on sys.path; this
# also covers `python -m bench.throughput`.
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from clients import (  # noqa: E402
    CLIENTS,
    SERIAL_CLIENTS,
    RunOptions,
    Unavailable,
    Workload,
    build_messages,
    digest,
)
from throughput_broker import BrokerFixture, find_broker_pid, mask_url  # noqa: E402
from throughput_report import (  # noqa: E402
    compute_ratios,
    print_ratios,
    print_table,
    succeeded,
    summarize_client,
)

# --------------------------------------------------------------------------- children


def child_main() -> int:
    """Subprocess entry: run one client, write its result as JSON to the given path."""
    spec = json.load(sys.stdin)
    name = spec["client"]
    workload = Workload(**spec["workload"])
    opts = RunOptions(**spec["options"])
    if name not in SERIAL_CLIENTS:
        opts.time_cap = 0.0
    messages = build_messages(workload)
    sha = digest(messages)
    # The workload lives for the whole run; keep the collector from rescanning it
    # and charging that to whichever client happened to trigger a collection.
    gc.collect()
    gc.freeze()
    try:
        result = CLIENTS[name](spec["url"], spec["exchange"], messages, opts)
    except Unavailable as exc:
        result = {"unavailable": str(exc)}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    password = urlsplit(spec["url"]).password
    for key in ("error", "unavailable"):  # library errors may quote the URL
        if password and isinstance(result.get(key), str):
            result[key] = result[key].replace(password, "***")
    sizes = [len(body) for _, body in messages]
    result.update(
        client=name,
        bodies_sha256=sha,
        body_bytes_min=min(sizes, default=0),
        body_bytes_max=max(sizes, default=0),
    )
    Path(spec["result_path"]).write_text(json.dumps(result))
    return 0


def run_child(name: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one client in a fresh interpreter and collect its result."""
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        result_path = Path(tmp) / "result.json"
        payload = json.dumps({**spec, "client": name, "result_path": str(result_path)})
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
        try:
            proc = subprocess.run(
                cmd, input=payload, text=True, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return {"client": name, "error": f"timed out after {timeout:.0f} s"}
        if proc.stderr.strip():
            print(f"  [{name} stderr]\n    " + "\n    ".join(proc.stderr.strip().splitlines()))
        if not result_path.exists():
            return {"client": name, "error": f"child exited {proc.returncode} without a result"}
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result


# --------------------------------------------------------------------------- command line


def parse_value(text: str) -> Any:
    """Best guess at a Publisher option's type: 'true' -> True, '1' -> 1, '0.5' -> 0.5."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if any(c.isdigit() for c in text):  # keeps 'inf' or 'nan' as the strings they look like
        for convert in (int, float):
            with contextlib.suppress(ValueError):
                return convert(text)
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=os.environ.get("STREAMER_URL", DEFAULT_URL))
    p.add_argument("--exchange", default="streamer.bench")
    p.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset")
    p.add_argument("--tasks", type=int, default=Workload.tasks)
    p.add_argument("--reports", type=int, default=Workload.reports, help="reports per task")
    p.add_argument("--size", type=int, default=Workload.size, help="body size in bytes")
    p.add_argument("--window", type=int, default=1_000, help="max unconfirmed (pipelined)")
    p.add_argument("--batch", type=int, default=100, help="blaster publishes per write")
    p.add_argument(
        "--time-cap",
        type=float,
        default=30.0,
        help="seconds before one-at-a-time clients (pika, kombu, aio-pika-await) stop; 0=off",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="interleaved rounds over the clients (a, b, c, a, b, c, ...); the table shows medians",
    )
    p.add_argument(
        "--repeat-all",
        action="store_true",
        help="repeat the one-at-a-time clients too (default: they run in round 1 only)",
    )
    p.add_argument(
        "--streamer-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for streamer.Publisher(...), repeatable, e.g. channels=1",
    )
    p.add_argument("--child-timeout", type=float, default=1_800.0)
    p.add_argument(
        "--json", type=Path, default=None, help="default: bench/results/throughput-<time>.json"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.client_list = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in args.client_list if c not in CLIENTS]
    if unknown:
        p.error(f"unknown client(s) {', '.join(unknown)}; choose from {', '.join(CLIENTS)}")
    if min(args.tasks, args.reports, args.window, args.batch, args.repeat) < 1:
        p.error("--tasks, --reports, --window, --batch and --repeat must be >= 1")
    if args.batch > args.window:
        p.error("--batch must not exceed --window")
    args.streamer_options = {}
    for item in args.streamer_option:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            p.error(f"--streamer-option wants KEY=VALUE, got {item!r}")
        if key in ("url", "exchange"):
            p.error(f"--streamer-option {key}: use --{key}, every client shares it")
        args.streamer_options[key] = parse_value(value.strip())
    return args


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for pkg in ("aio-pika", "aiormq", "pamqp", "pika", "kombu", "amqp", "msgspec", "uvloop"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def run_rounds(
    args: argparse.Namespace, spec: dict[str, Any], fixture: BrokerFixture, round_1_only: set[str]
) -> list[dict[str, Any]]:
    """Every selected client once per round, rounds one after the other.

    Interleaved (a, b, c, a, b, c) rather than grouped (a, a, b, b, c, c) so a slow
    drift of the machine (a neighbour, thermal, the broker's own GC) hits every
    client alike instead of whichever one happened to run during it.
    """
    results: list[dict[str, Any]] = []
    unavailable: set[str] = set()  # no point in asking again next round
    for rnd in range(1, args.repeat + 1):
        for name in args.client_list:
            if name in unavailable or (rnd > 1 and name in round_1_only):
                continue
            fixture.purge()
            print(f"- [{rnd}/{args.repeat}] {name} ...", flush=True)
            result = run_child(name, spec, args.child_timeout)
            result["round"] = rnd
            if "unavailable" in result:
                print(f"  {name}: unavailable ({result['unavailable']})")
                unavailable.add(name)
            elif not succeeded(result):
                print(f"  {name}: failed ({result.get('error')})")
            else:
                result["queue_depth_after"] = fixture.depth()
                print(
                    f"  {result['confirmed']:,} confirmed in {result['elapsed_s']:.2f} s "
                    f"= {result['msgs_per_s']:,.0f} msgs/s"
                )
            results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main()

    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    wall0 = time.perf_counter()
    workload = Workload(tasks=args.tasks, reports=args.reports, size=args.size)
    options = RunOptions(
        window=args.window,
        batch=args.batch,
        time_cap=args.time_cap,
        broker_pid=find_broker_pid(args.url),
        streamer_options=args.streamer_options,
    )
    spec = {
        "url": args.url,
        "exchange": args.exchange,
        "workload": asdict(workload),
        "options": asdict(options),
    }
    round_1_only: set[str] = set()
    if args.repeat > 1 and not args.repeat_all:
        round_1_only = SERIAL_CLIENTS & set(args.client_list)
    streamer_opts = " ".join(f"{k}={v!r}" for k, v in args.streamer_options.items())
    print(
        f"broker {mask_url(args.url)}  exchange {args.exchange!r}  "
        f"{workload.tasks:,} tasks x {workload.reports:,} reports = {workload.total:,} msgs "
        f"of {workload.size} B; window {options.window}, confirms on; "
        f"{args.repeat} round{'s' if args.repeat > 1 else ''}"
        + (f"; streamer {streamer_opts}" if streamer_opts else "")
    )

    try:
        fixture = BrokerFixture(args.url, args.exchange)
    except Exception as exc:
        print(f"cannot set up exchange/queue on {mask_url(args.url)}: {type(exc).__name__}: {exc}")
        return 2
    try:
        results = run_rounds(args, spec, fixture, round_1_only)
    finally:
        fixture.close()

    digests = {r.get("bodies_sha256") for r in results} - {None}
    if len(digests) > 1:
        print("WARNING: clients saw different bodies:", digests)
    summaries = {
        name: summarize_client(
            name,
            [r for r in results if r["client"] == name],
            round_1_only=name in round_1_only,
        )
        for name in args.client_list
    }
    ratios = compute_ratios(summaries, results)
    print()
    print_table(list(summaries.values()), time_cap=args.time_cap)
    print_ratios(summaries, ratios)

    wall = time.perf_counter() - wall0
    json_path = args.json or RESULTS_DIR / f"throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "started_at": started_at,
        "wall_s": wall,
        "url": mask_url(args.url),
        "exchange": args.exchange,
        "workload": asdict(workload),
        "options": asdict(options),
        "repeat": args.repeat,
        "repeat_all": args.repeat_all,
        "host": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "versions": _versions(),
        },
        "results": results,  # every round's raw result, each tagged with its "round"
        "medians": summaries,
        "ratios": ratios,
    }
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON written to {json_path}\nwall time {wall:.1f} s")
    failed = [r["client"] for r in results if not succeeded(r) and "unavailable" not in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
