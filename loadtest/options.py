"""The harness's own command-line options, apart from the locustfile that runs them.

Locust adds them to its parser (the locustfile registers :func:`add_options` with
``events.init_command_line_parser``); ``streamer loadtest --help`` lists them from here too,
without importing locust (whose import monkey-patches the interpreter with gevent). Only
the standard library is imported here for that reason.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["SHARED_PUBLISHER", "TITLE", "add_options", "publisher_options"]

TITLE = "streamer load"

# One publisher per locust process stands for all of its simulated task workers, each of which
# would have a confirm window of its own. With a real worker's window (1,000) shared by all,
# reports coalesce as soon as confirm latency passes 1,000 / rate (25 ms at 40,000/s): the
# search then stops where that knife-edge falls, which moved 15-20% between two runs, instead
# of where the broker's latency crosses the bound. 10,000 unconfirmed reports are the default
# p99 bound (100 ms) at 100,000 reports/s.
SHARED_PUBLISHER: Final[dict[str, int]] = {"confirm_window": 10_000, "max_pending": 20_000}


def publisher_options(items: Sequence[str]) -> dict[str, Any]:
    """``--publisher-option NAME=VALUE`` items as publisher settings (a value is read as JSON,
    else kept as a string)."""
    settings: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            settings[name.strip()] = json.loads(value)
        except ValueError:
            settings[name.strip()] = value
    return settings


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add the harness's options to ``parser`` (locust's, or any argparse parser), as a group."""
    group = parser.add_argument_group(TITLE, "task traffic through streamer")
    group.add_argument("--exchange", default="streamer.loadtest", help="topic exchange")
    group.add_argument(
        "--rate", type=float, default=5000.0, help="offered reports/s over all users (fixed mode)"
    )
    group.add_argument(
        "--rates", default="", help="variable rate: RATE:SECONDS steps, e.g. 5000:30,20000:30"
    )
    group.add_argument("--capacity", action="store_true", help="search the highest sustained rate")
    group.add_argument("--start-rate", type=float, default=5000.0, help="capacity: first rate")
    group.add_argument("--rate-factor", type=float, default=1.25, help="capacity: growth/step")
    group.add_argument("--max-rate", type=float, default=200_000.0, help="capacity: ceiling")
    group.add_argument("--step-time", type=float, default=10.0, help="capacity: s per step")
    group.add_argument("--refine", type=int, default=2, help="capacity: bisection steps")
    group.add_argument("--warmup", type=float, default=3.0, help="unmeasured s per step")
    group.add_argument(
        "--cooldown",
        type=float,
        default=5.0,
        help="capacity: s at rate 0 after a failed step, for the broker to drain",
    )
    group.add_argument("--max-p99", type=float, default=100.0, help="bound: confirm p99, ms")
    group.add_argument(
        "--max-drop", type=float, default=0.001, help="bound: (coalesced+dropped)/published"
    )
    group.add_argument(
        "--reach", type=float, default=0.95, help="bound: confirmed/s at least this x offered"
    )
    group.add_argument("--updates", type=int, default=420, help="reports per finished task")
    group.add_argument("--error-rate", type=float, default=0.0, help="share of tasks failing")
    group.add_argument("--cancel-rate", type=float, default=0.0, help="share canceled")
    group.add_argument(
        "--report-size", type=int, default=0, help="mean report bytes (0: the model's ~650)"
    )
    group.add_argument("--tick", type=float, default=0.02, help="shortest user sleep, s")
    group.add_argument(
        "--variants",
        type=int,
        default=16,
        help="tasks generated per kind and outcome, then replayed with new ids (0: all fresh)",
    )
    group.add_argument(
        "--queue-type",
        choices=("classic", "quorum", "stream"),
        default="classic",
        help="type of the watcher's (and sink's) queues: classic (exclusive), quorum or "
        "stream (named, deleted at the end)",
    )
    group.add_argument(
        "--queues",
        type=int,
        default=1,
        help="consumer queues bound to <prefix>.#, each with its own reader (or sinks)",
    )
    group.add_argument(
        "--fail-on",
        default="",
        metavar="BOUNDS",
        help="e.g. 'p99<50ms,drop<0.1%%,reach>0.95': a step that misses a bound fails (exit 3 "
        "for --rate/--rates); the capacity search finds the highest rate meeting them. "
        "Metrics: p50 p90 p99 p99.9 max, e2e_p50 .. e2e_max, drop, reach",
    )
    group.add_argument("--no-watch", action="store_true", help="no end-to-end watcher")
    group.add_argument(
        "--sink",
        action="store_true",
        help="with --no-watch: bind a queue capped at 10,000 that nobody reads (the broker "
        "then routes and enqueues every report, as in bench/throughput.py)",
    )
    group.add_argument(
        "--per-report-events",
        action="store_true",
        help="fire one locust request event per report (slow; default: aggregated rows)",
    )
    group.add_argument(
        "--publisher-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a streamer setting, e.g. max_pending=20000 (repeatable)",
    )
