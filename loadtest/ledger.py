"""The ledger: streamer's own accounting, turned into locust's request statistics.

Each report the publisher settles becomes one locust request: a confirm is a success whose
response time is its confirm latency (type ``publish``, name ``confirm``); a drop is a failure
named by its reason (``dropped:overflow``, ``dropped:disconnected``, ...) and a coalesced
report (superseded by a newer one of its task before it was written) a failure named
``coalesced``. Failures carry no response time, so they do not skew the percentiles. Locust's
totals are therefore exactly ``confirmed + coalesced + dropped``, and equal ``published`` once
the publisher is flushed (pending 0); :func:`identity` checks it at the end of a run.

Why not one ``events.request`` per report: at ~40k reports/s on two cores shared with the
broker, locust's per-event bookkeeping would cost a large share of a core (see
docs/capacity-testing.md for the measurement). The ledger polls the publisher's
:class:`~streamer.Stats` instead and logs each poll's difference in one
``StatsEntry.extend`` per row, the mechanism locust's master itself uses to merge worker
reports: counts stay exact per report, latencies keep the histogram's ~12%-wide buckets.
``per_report_events=True`` fires the real request event once per report instead, for
listeners that need them (and to measure what they cost).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from locust.env import Environment
from locust.stats import RequestStats, StatsEntry, StatsError, bucket_response_time

from streamer import BackgroundPublisher, Stats
from streamer.stats import DROP_REASONS, LatencyHistogram

from .traffic import Counts

__all__ = [
    "CONFIRM",
    "METHOD",
    "WHY",
    "Ledger",
    "Snapshot",
    "identity",
    "latency_quantiles",
    "locust_counts",
    "sum_snapshots",
    "take_snapshot",
]

METHOD: Final = "publish"
CONFIRM: Final = "confirm"
COALESCED: Final = "coalesced"
#: The failure message of each row that is not a confirm (the failures table shows it).
WHY: Final = {
    "overflow": "max_pending reports already held",
    "disconnected": "the connection was down or went down before the confirm",
    "blocked": "the broker blocked the connection (resource alarm)",
    "nacked": "the broker refused the publish",
    "returned": "unroutable, and mandatory was set",
    "closed": "the publisher was closing or closed",
    COALESCED: "superseded by a newer report of its task while the confirm window was full",
}
_BOUNDS_MS: Final = [LatencyHistogram.upper_bound(i) * 1e3 for i in range(LatencyHistogram.BUCKETS)]

# A snapshot is a plain dict (it travels from workers to the master in locust's reports):
# published, confirmed, coalesced, pending, dropped {reason: n}, latency [bucket counts],
# latency_max (s),
# offered, tasks_started, tasks_done, outcomes {state: n}, t (time of the snapshot), final.
Snapshot = dict[str, Any]


def take_snapshot(stats: Stats, counts: Counts, *, final: bool = False) -> Snapshot:
    return {
        "published": stats.published,
        "confirmed": stats.confirmed,
        "coalesced": stats.coalesced,
        "pending": stats.pending,
        "dropped": dict(stats.dropped_by_reason),
        "latency": list(stats.confirm_latency_counts),
        "latency_max": stats.confirm_latency_max,
        "offered": counts.offered,
        "tasks_started": counts.tasks_started,
        "tasks_done": counts.tasks_done,
        "outcomes": dict(counts.outcomes),
        "t": time.time(),
        "final": final,
    }


def _minus(a: Snapshot, b: Snapshot) -> Snapshot:
    """``a - b`` for every counter (a snapshot relative to a baseline)."""
    out = dict(a)
    for key in ("published", "confirmed", "coalesced", "offered", "tasks_started", "tasks_done"):
        out[key] = a[key] - b[key]
    out["dropped"] = {k: v - b["dropped"].get(k, 0) for k, v in a["dropped"].items()}
    out["outcomes"] = {k: v - b["outcomes"].get(k, 0) for k, v in a["outcomes"].items()}
    bl = b["latency"]
    out["latency"] = [n - (bl[i] if i < len(bl) else 0) for i, n in enumerate(a["latency"])]
    return out


def sum_snapshots(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The totals of several processes' snapshots."""
    total: Snapshot = {
        "published": 0,
        "confirmed": 0,
        "coalesced": 0,
        "pending": 0,
        "dropped": dict.fromkeys(DROP_REASONS, 0),
        "latency": [0] * len(_BOUNDS_MS),
        "latency_max": 0.0,
        "offered": 0,
        "tasks_started": 0,
        "tasks_done": 0,
        "outcomes": {},
        "t": 0.0,
        "final": True,
        "processes": 0,
    }
    for snap in snapshots:
        for key in ("published", "confirmed", "coalesced", "pending", "offered"):
            total[key] += snap[key]
        total["tasks_started"] += snap["tasks_started"]
        total["tasks_done"] += snap["tasks_done"]
        for reason, n in snap["dropped"].items():
            total["dropped"][reason] = total["dropped"].get(reason, 0) + n
        for state, n in snap["outcomes"].items():
            total["outcomes"][state] = total["outcomes"].get(state, 0) + n
        for i, n in enumerate(snap["latency"]):
            total["latency"][i] += n
        total["latency_max"] = max(total["latency_max"], snap.get("latency_max", 0.0))
        total["t"] = max(total["t"], snap["t"])
        total["final"] = total["final"] and snap["final"]
        total["processes"] += 1
    return total


def latency_quantiles(counts: Sequence[int], qs: Sequence[float]) -> list[float]:
    """Quantiles (ms, upper bucket bounds) of a confirm-latency bucket distribution."""
    total = sum(counts)
    out = []
    for q in qs:
        if not total:
            out.append(0.0)
            continue
        rank, seen = q * total, 0
        for i, n in enumerate(counts):
            seen += n
            if n and seen >= rank:
                out.append(_BOUNDS_MS[i])
                break
    return out


def _log_many(
    stats: RequestStats,
    name: str,
    n: int,
    times: Mapping[float, int] | None,
    error: str | None = None,
) -> None:
    """Log ``n`` requests of one row at once, as ``n`` calls of ``log_request`` would.

    ``times``: response time (ms) -> count, summing to ``n``; None for failures (they are
    counted as requests without a response time, like locust's ``None`` response times).
    """
    batch = StatsEntry(stats, name, METHOD)
    now = time.time()
    second = int(now)
    batch.num_requests = n
    batch.num_reqs_per_sec[second] = n
    batch.last_request_timestamp = now
    if times:
        for rt, count in times.items():
            batch.total_response_time += rt * count
            batch.response_times[bucket_response_time(rt)] += count
        batch.min_response_time = min(times)
        batch.max_response_time = max(times)
    else:
        batch.num_none_requests = n
    if error is not None:
        batch.num_failures = n
        batch.num_fail_per_sec[second] = n
    stats.entries[(name, METHOD)].extend(batch)
    stats.total.extend(batch)
    if error is not None:
        key = StatsError.create_key(METHOD, name, error)
        entry = stats.errors.get(key)
        if entry is None:
            entry = stats.errors[key] = StatsError(METHOD, name, error)
        entry.occurred()
        entry.occurrences += n - 1


def _spread(confirmed: int, latency: Sequence[int]) -> dict[float, int]:
    """``confirmed`` confirms spread over the latency buckets' new counts, lowest first.

    The histogram also times re-sends and nacks, so its new counts can exceed the new
    confirms; any confirms beyond it (never seen) would go to the slowest bucket seen.
    """
    out: dict[float, int] = {}
    left = confirmed
    last = 0.0
    for i, n in enumerate(latency):
        if n <= 0 or left <= 0:
            continue
        take = min(n, left)
        out[_BOUNDS_MS[i]] = out.get(_BOUNDS_MS[i], 0) + take
        left -= take
        last = _BOUNDS_MS[i]
    if left > 0:
        out[last] = out.get(last, 0) + left
    return out


class Ledger:
    """Turns one process's publisher accounting into its locust request statistics.

    Args:
        environment: the locust environment whose stats receive the requests.
        publisher: the process's publisher.
        counts: what the process's workers handed over.
        per_report_events: fire ``events.request`` once per report instead of logging
            aggregated rows.
    """

    def __init__(
        self,
        environment: Environment,
        publisher: BackgroundPublisher,
        counts: Counts,
        *,
        per_report_events: bool = False,
    ) -> None:
        self.environment = environment
        self.publisher = publisher
        self.counts = counts
        self.per_report_events = per_report_events
        self._baseline = take_snapshot(Stats(), Counts())
        self._logged = self._baseline
        self.latest: Snapshot = _minus(self._baseline, self._baseline)

    def start(self) -> None:
        """A new test: from now on, count from here (locust cleared its stats)."""
        self._baseline = self._logged = take_snapshot(self.publisher.stats, self.counts)
        self.latest = _minus(self._baseline, self._baseline)

    def poll(self, *, final: bool = False) -> Snapshot:
        """Log what was settled since the last poll; return the run's snapshot so far."""
        now = take_snapshot(self.publisher.stats, self.counts, final=final)
        delta = _minus(now, self._logged)
        self._logged = now
        self._log(delta)
        self.latest = _minus(now, self._baseline)
        return self.latest

    def _log(self, delta: Snapshot) -> None:
        failures = [
            (f"dropped:{r}", WHY.get(r, r), n) for r, n in delta["dropped"].items() if n > 0
        ]
        if delta["coalesced"] > 0:
            failures.append((COALESCED, WHY[COALESCED], delta["coalesced"]))
        confirms = _spread(delta["confirmed"], delta["latency"]) if delta["confirmed"] else {}
        if self.per_report_events:
            fire = self.environment.events.request.fire
            for rt, n in confirms.items():
                for _ in range(n):
                    fire(
                        request_type=METHOD,
                        name=CONFIRM,
                        response_time=rt,
                        response_length=0,
                        exception=None,
                        context={},
                    )
            for name, why, n in failures:
                for _ in range(n):
                    fire(
                        request_type=METHOD,
                        name=name,
                        response_time=None,
                        response_length=0,
                        exception=why,
                        context={},
                    )
            return
        stats = self.environment.stats
        if confirms:
            _log_many(stats, CONFIRM, delta["confirmed"], confirms)
        for name, why, n in failures:
            _log_many(stats, name, n, None, error=why)


def locust_counts(stats: RequestStats) -> dict[str, int]:
    """Requests, successes and failures of the ledger's rows, and locust's own total."""
    requests = failures = 0
    for (_, method), entry in list(stats.entries.items()):
        if method == METHOD:
            requests += entry.num_requests
            failures += entry.num_failures
    return {
        "requests": requests,
        "successes": requests - failures,
        "failures": failures,
        "total_requests": stats.total.num_requests,
    }


def identity(snap: Snapshot, locust: Mapping[str, int]) -> tuple[bool, list[str]]:
    """Check the accounting identity and locust's totals against it; say it in lines."""
    dropped = sum(snap["dropped"].values())
    settled = snap["confirmed"] + snap["coalesced"] + dropped
    reasons = ", ".join(f"{r} {n:,}" for r, n in snap["dropped"].items() if n) or "none"
    balanced = snap["published"] == settled + snap["pending"]
    flushed = snap["pending"] == 0
    matches = (
        locust["requests"] == settled
        and locust["successes"] == snap["confirmed"]
        and locust["failures"] == snap["coalesced"] + dropped
        and locust["total_requests"] == locust["requests"]
    )
    offered = snap["offered"] == snap["published"]
    mark = {True: "ok", False: "MISMATCH"}
    lines = [
        f"streamer: published {snap['published']:,} = confirmed {snap['confirmed']:,} + "
        f"coalesced {snap['coalesced']:,} + dropped {dropped:,} ({reasons}) + pending "
        f"{snap['pending']:,}  [{mark[balanced]}{'' if flushed else ', pending not 0'}]",
        f"locust:   requests {locust['requests']:,} (successes {locust['successes']:,}, "
        f"failures {locust['failures']:,}); Aggregated {locust['total_requests']:,}  "
        f"[{mark[matches]}]",
        f"workers:  reports handed to publish() {snap['offered']:,}  [{mark[offered]}]",
    ]
    return balanced and flushed and matches and offered, lines
