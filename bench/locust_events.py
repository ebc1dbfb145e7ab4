#!/usr/bin/env python
"""What locust's statistics cost per report: one request event each, or the ledger's rows.

The load harness (loadtest/) turns streamer's accounting into locust requests. Firing
``events.request`` once per report is locust's usual way; at tens of thousands of reports per
second its cost per event matters on a machine whose cores the broker needs too. This times
both ways on a real locust environment (with its stats listener), per report:

    .venv/bin/python bench/locust_events.py [--reports 200000]

Run it from the repository root. It imports locust, which monkey-patches with gevent: it is a
script, not a pytest benchmark.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gevent import monkey

monkey.patch_all()

from locust import User, events  # noqa: E402
from locust.env import Environment  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.ledger import CONFIRM, METHOD, _log_many  # noqa: E402


class _Nobody(User):
    abstract = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=200_000)
    n = parser.parse_args().reports
    env = Environment(user_classes=[_Nobody], events=events)
    env.create_local_runner()
    fire = env.events.request.fire

    t = time.perf_counter()
    for i in range(n):
        fire(
            request_type=METHOD,
            name=CONFIRM,
            response_time=1.0 + (i % 50),
            response_length=0,
            exception=None,
            context={},
        )
    per_event = (time.perf_counter() - t) / n
    assert env.stats.total.num_requests == n

    env.stats.reset_all()
    # The ledger logs one row per poll (once a second), with ~10 latency buckets in it.
    polls = max(n // 40_000, 1)
    times = {float(b): (n // polls) // 10 for b in range(1, 11)}
    t = time.perf_counter()
    for _ in range(polls):
        _log_many(env.stats, CONFIRM, sum(times.values()), times)
    per_report = (time.perf_counter() - t) / (polls * sum(times.values()))
    assert env.stats.total.num_requests == polls * sum(times.values())

    print(f"events.request, one per report: {per_event * 1e6:6.2f} µs per report")
    print(f"ledger rows, one per poll:      {per_report * 1e6:6.4f} µs per report")
    print(f"at 40,000 reports/s: {per_event * 40_000:.0%} of a core vs {per_report * 40_000:.3%}")


if __name__ == "__main__":
    main()
