"""Locust users that are task workers publishing their status reports through streamer.

``streamer loadtest ARGS`` runs ``locust -f`` this file with ``ARGS``, from any directory
(docs/capacity-testing.md has every command); in a checkout ``locust -f
loadtest/locustfile.py ARGS`` is the same::

    streamer loadtest --headless -u 50 --rate 20000 -t 30s --csv out/run
    streamer loadtest --headless --capacity --csv out/capacity
    streamer loadtest --headless --rates 5000:20,20000:20,40000:20
    streamer loadtest --headless --processes 2 --rate 30000 -t 60s

Each user is one simulated task worker (:mod:`loadtest.traffic`): a sync, then the publish it
spawned, 400+ reports each, at ``--rate`` reports/s shared by all users. All users of a
process share one :class:`~streamer.BackgroundPublisher`, whose uvloop runs in a real OS
thread next to gevent's hub; its confirm window is sized for all of them (10,000 unless set).
Locust's request statistics are the publisher's own accounting (:mod:`loadtest.ledger`): one
success per confirmed report with its confirm latency, one failure per dropped or coalesced
report named by reason. A watcher on the master (or the only process) measures what
consumers receive (:mod:`loadtest.watcher`), and one load shape drives the offered rate in
every mode (:mod:`loadtest.capacity`): fixed, ``RATE:SECONDS`` steps, or the capacity search.
At the end the harness prints and checks the accounting identity; a mismatch makes the exit
code 1.

Distributed: ``--master`` / ``--worker`` and ``--processes`` work as usual. Workers attach
their publisher's accounting to locust's worker reports; the master sums them, runs the
shape (it tells the workers the per-user rate in a ``streamer_rate`` message) and the
watcher.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import gevent
from flask import request
from locust import LoadTestShape, User, constant, events, task
from locust.env import Environment
from locust.runners import WORKER_REPORT_INTERVAL, LocalRunner, MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

from loadtest.capacity import (
    Bounds,
    CapacitySearch,
    Plan,
    StepResult,
    Steps,
    measure,
    parse_fail_on,
    parse_steps,
    table,
    window,
    write_reports,
)
from loadtest.ledger import (
    Ledger,
    Snapshot,
    identity,
    latency_quantiles,
    locust_counts,
    sum_snapshots,
)
from loadtest.options import SHARED_PUBLISHER, add_options, publisher_options
from loadtest.traffic import Mix, Traffic
from loadtest.watcher import Watcher, merge_snapshots, queue_name
from streamer import BackgroundPublisher
from streamer.settings import DEFAULT_URL, load_settings, mask_url
from streamer.stats import LatencyHistogram

log = logging.getLogger("loadtest")

RATE_MESSAGE = "streamer_rate"
# After a failed step: at rate 0 for --cooldown s, and then until the watchers have received
# nothing for _DRAINED s (their queues are empty: the broker has no backlog left), at most
# _MAX_REST s more.
_DRAINED = 1.0
_MAX_REST = 60.0
FAILED_BOUNDS = 3  # the exit code of a --rate/--rates run that missed a --fail-on bound
_BOUNDS_MS = [LatencyHistogram.upper_bound(i) * 1e3 for i in range(LatencyHistogram.BUCKETS)]


events.init_command_line_parser.add_listener(add_options)


class Harness:
    """Everything one locust process holds for the run (one per process)."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.options = environment.parsed_options
        self.per_user_rate = 0.0
        self.publisher: BackgroundPublisher | None = None
        self.traffic: Traffic | None = None
        self.ledger: Ledger | None = None
        self.watchers: list[Watcher] = []  # one per consumer queue (--queues)
        self.sinks: list[Watcher] = []
        self.run_id = uuid.uuid4().hex[:8]  # names the quorum and stream queues of this run
        self.processes: dict[str, Snapshot] = {}  # latest snapshot per process
        self.history: dict[str, deque[Snapshot]] = {}  # recent snapshots per process
        self.plan: Plan | None = None
        self.checked = False
        self.reporting = False  # a worker sends its snapshot (from its test start to its final)
        self._poller: gevent.Greenlet | None = None
        self._user_index = 0

    @property
    def url(self) -> str:
        return self.environment.host or os.environ.get("STREAMER_URL") or DEFAULT_URL

    @property
    def runs_users(self) -> bool:
        return isinstance(self.environment.runner, LocalRunner | WorkerRunner)

    @property
    def collects(self) -> bool:
        return isinstance(self.environment.runner, LocalRunner | MasterRunner)

    def watched(self) -> dict[str, Any] | None:
        """The watchers' counts, summed over the queues (None without a watcher)."""
        if not self.watchers:
            return None
        return merge_snapshots([w.snapshot() for w in self.watchers])

    def next_user(self) -> int:
        self._user_index += 1
        return self._user_index

    # -- processes with users -------------------------------------------------------------------

    def start_users_side(self) -> None:
        options = self.options
        if self.publisher is None:
            given = {
                "connection_name": f"streamer loadtest {os.getpid()}",
                **publisher_options(options.publisher_option),
            }
            settings = load_settings(
                defaults=SHARED_PUBLISHER, url=self.url, exchange=options.exchange, **given
            )
            self.publisher = BackgroundPublisher(settings=settings)
            log.info(
                "publisher (one for all this process's users): confirm window %s, max pending %s",
                f"{self.publisher.settings.confirm_window:,}",
                f"{self.publisher.settings.max_pending:,}",
            )
            mix = Mix(
                updates=options.updates,
                error_rate=options.error_rate,
                cancel_rate=options.cancel_rate,
                report_size=options.report_size,
            )
            self.traffic = Traffic(
                self.publisher.publish, mix, tick=options.tick, variants=options.variants
            )
            self.ledger = Ledger(
                self.environment,
                self.publisher,
                self.traffic.counts,
                per_report_events=options.per_report_events,
            )
        assert self.ledger is not None
        self.ledger.start()
        self.reporting = True
        self._poller = gevent.spawn(self._poll_forever)

    def _poll_forever(self) -> None:
        assert self.ledger is not None
        while True:
            gevent.sleep(1.0)
            self.record("local", self.ledger.poll())

    def record(self, process: str, snap: Snapshot) -> None:
        self.processes[process] = snap
        self.history.setdefault(process, deque(maxlen=600)).append(snap)

    def stop_users_side(self) -> None:
        """Users are stopped: flush, and log the last confirms and drops."""
        if self._poller is not None:
            self._poller.kill()
            self._poller = None
        if self.publisher is None or self.ledger is None:
            return  # stopped before it ever started
        if not self.publisher.flush(timeout=15):
            log.warning("the publisher still had reports pending after 15 s")
        self.record("local", self.ledger.poll(final=True))

    # -- the master or the only process ---------------------------------------------------------

    def live(self) -> dict[str, str]:
        """The run so far, as the web UI's streamer tab shows it."""
        snap = self.totals()
        dropped = sum(snap["dropped"].values())
        p50, p99, p999 = latency_quantiles(snap["latency"], (0.5, 0.99, 0.999))
        rows = {
            "per-user rate (reports/s)": f"{self.per_user_rate:,.1f}",
            "published": f"{snap['published']:,}",
            "confirmed": f"{snap['confirmed']:,}",
            "coalesced": f"{snap['coalesced']:,}",
            "dropped": f"{dropped:,} "
            + ", ".join(f"{r} {n:,}" for r, n in snap["dropped"].items() if n),
            "pending": f"{snap['pending']:,}",
            "confirm latency p50 / p99 / p99.9 (ms)": f"{p50:.2f} / {p99:.2f} / {p999:.2f}",
            "tasks finished / started": f"{snap['tasks_done']:,} / {snap['tasks_started']:,}",
        }
        w = self.watched()
        if w is not None:
            e50, e99 = latency_quantiles(w["latency"], (0.5, 0.99))
            rows["watcher: received"] = f"{w['received']:,}"
            rows["watcher: end-to-end p50 / p99 (ms)"] = f"{e50:.2f} / {e99:.2f}"
            rows["watcher: lost / out of order / duplicates"] = (
                f"{w['lost']:,} / {w['out_of_order']:,} / {w['duplicates']:,}"
            )
        for r in self.plan.results if self.plan is not None else []:
            rows[f"step {r.step}: {r.offered:,.0f}/s offered"] = (
                f"confirmed {r.confirmed:,.0f}/s, p99 {r.p99:.1f} ms, drop {r.drop_ratio:.4f}"
                f" ({'pass' if r.passed else r.why})"
            )
        return rows

    def totals(self) -> Snapshot:
        return sum_snapshots(self.processes.values())

    def check(self) -> bool:
        """Print the accounting identity, locust's totals and the watcher's findings."""
        self.checked = True
        if self.options.csv_prefix:
            # Let locust's CSV writer (it writes every CSV_STATS_INTERVAL_SEC) record the
            # final totals before the run ends.
            gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)
        snap = self.totals()
        counts = locust_counts(self.environment.stats)
        ok, lines = identity(snap, counts)
        if isinstance(self.environment.runner, MasterRunner) and not snap["final"]:
            lines.append("note: a worker's final report did not arrive; counts may be partial")
            ok = False
        out = ["", "streamer accounting at test stop", *lines]
        out.append(
            f"confirm latency ms (from each report's intended send time): "
            f"{_percentiles(snap['latency'], snap['latency_max'])}; tasks finished "
            f"{snap['tasks_done']:,} of {snap['tasks_started']:,} started "
            f"({', '.join(f'{k} {v:,}' for k, v in snap['outcomes'].items())}); "
            f"processes {snap['processes']}"
        )
        for watcher in self.watchers:
            watcher.settle()
        watched = self.watched()
        if watched is not None:
            queues = len(self.watchers)
            undelivered = (snap["coalesced"] + sum(snap["dropped"].values())) * queues
            out.append(
                f"watcher ({self.options.queue_type}"
                f"{f', {queues} queues, counts summed' if queues > 1 else ''}): received "
                f"{watched['received']:,} of {snap['confirmed'] * queues:,} confirmed over "
                f"{watched['tasks']:,} tasks; end-to-end ms "
                f"{_percentiles(watched['latency'], watched['latency_max'])}; lost (seq gaps) "
                f"{watched['lost']:,} (publisher did not deliver {undelivered:,}); out of order "
                f"{watched['out_of_order']:,}; duplicates {watched['duplicates']:,}"
            )
            for watcher in self.watchers:
                if watcher.error is not None:
                    which = watcher.name or watcher.queue_type
                    out.append(f"watcher {which} stopped early: {watcher.error!r}")
        print("\n".join(out), flush=True)
        if not ok:
            log.error("streamer accounting and locust's totals disagree (see above)")
            self.environment.process_exit_code = 1
        self._write_summary(snap, counts, ok, watched)
        return ok

    def _write_summary(
        self, snap: Snapshot, counts: dict[str, int], ok: bool, watched: dict[str, Any] | None
    ) -> None:
        prefix = self.options.csv_prefix
        if not prefix:
            return
        Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "identity_ok": ok,
            "streamer": snap,
            "locust": counts,
            "watcher": watched,
            "processes": self.processes,
        }
        Path(f"{prefix}_streamer.json").write_text(json.dumps(summary, indent=2) + "\n")
        if self.watchers:
            rows = [
                {"queue": w.name or f"classic-{n}", **row}
                for n, w in enumerate(self.watchers)
                for row in w.rows()
            ]
            with Path(f"{prefix}_tasks.csv").open("w", newline="") as f:
                fields = [
                    "queue",
                    "task_id",
                    "state",
                    "last_seq",
                    "received",
                    "lost",
                    "out_of_order",
                    "duplicates",
                    "e2e_max_ms",
                ]
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)


def _percentiles(counts: list[int], max_seconds: float) -> str:
    """``p50 1.26  p90 2.51  p99 10.00  p99.9 25.12  max 31.0`` (ms, within 2%)."""
    values = latency_quantiles(counts, (0.5, 0.9, 0.99, 0.999))
    names = ("p50", "p90", "p99", "p99.9")
    shown = "  ".join(f"{n} {v:.2f}" for n, v in zip(names, values, strict=True))
    return f"{shown}  max {max_seconds * 1e3:.1f}"


def _option_problem(options: Any) -> str | None:
    """What is wrong with the harness's options, in one line (None: nothing)."""
    if options is None:  # (locust without a command line, e.g. in a library)
        return None
    if options.queues < 1:
        return f"--queues must be at least 1, got {options.queues}"
    if not options.cooldown >= 0:
        return f"--cooldown must be 0 or more seconds, got {options.cooldown}"
    try:
        if options.fail_on:
            parse_fail_on(options.fail_on)
        if options.rates:
            parse_steps(options.rates)
    except ValueError as exc:
        return str(exc)
    return None


harness: Harness | None = None


def _harness() -> Harness:
    assert harness is not None, "the locustfile's init listener has not run"
    return harness


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    global harness
    problem = _option_problem(environment.parsed_options)
    if problem:
        log.error("%s", problem)
        raise SystemExit(2)
    h = harness = Harness(environment)
    runner = environment.runner

    def on_rate(msg: Any, **_: Any) -> None:
        h.per_user_rate = float(msg.data)

    if isinstance(runner, LocalRunner | WorkerRunner):
        runner.register_message(RATE_MESSAGE, on_rate)
    if isinstance(runner, WorkerRunner):

        @environment.events.report_to_master.add_listener
        def _attach(data: dict[str, Any], **_: Any) -> None:
            # The snapshot of what the stats being sent already hold (the poller logs and
            # updates it without yielding, so they always agree).
            if h.ledger is not None and h.reporting:
                data["streamer"] = h.ledger.latest
                h.reporting = h._poller is not None  # after a stop: the final one, once

    if isinstance(runner, MasterRunner):

        @environment.events.worker_report.add_listener
        def _collect(client_id: str, data: dict[str, Any], **_: Any) -> None:
            if "streamer" in data:
                h.record(client_id, data["streamer"])

    if environment.web_ui is not None and h.collects:
        _extend_web_ui(environment, h)

    if h.collects and (not h.options.no_watch or h.options.sink):
        watch = not h.options.no_watch
        queues = h.watchers if watch else h.sinks
        for n in range(h.options.queues):
            queue = Watcher(
                h.url,
                h.options.exchange,
                max_length=50_000 if watch else 10_000,
                consume=watch,
                queue_type=h.options.queue_type,
                name=queue_name(h.run_id, n),
            )
            queues.append(queue)  # (before start: stopped at the end even if it fails)
            queue.start()
        log.info(
            "%d %s %s queue(s) bound to %s on %s",
            len(queues),
            h.options.queue_type,
            "watcher" if watch else "sink",
            h.options.exchange,
            mask_url(h.url),
        )


def _extend_web_ui(environment: Environment, h: Harness) -> None:
    """A "streamer" tab in locust's web UI: the accounting, the watcher and the rate steps."""
    web_ui = environment.web_ui
    assert web_ui is not None
    web_ui.template_args["extended_tabs"] = [{"title": "Streamer", "key": "streamer"}]
    web_ui.template_args["extended_tables"] = [
        {
            "key": "streamer",
            "structure": [{"key": "metric", "title": "Metric"}, {"key": "value", "title": "Value"}],
        }
    ]

    @web_ui.app.after_request
    def _add_rows(response: Any) -> Any:
        if request.path == "/stats/requests" and response.is_json:
            rows = [{"metric": k, "value": v} for k, v in h.live().items()]
            extended = [{"key": "streamer", "data": rows}]
            response.set_data(json.dumps({**response.json, "extended_stats": extended}))
        return response


@events.test_start.add_listener
def _test_start(environment: Environment, **_: Any) -> None:
    h = _harness()
    h.checked = False
    if h.collects:
        h.processes.clear()
        h.history.clear()
        for watcher in h.watchers:
            watcher.reset()
    if h.runs_users:
        h.start_users_side()


@events.test_stop.add_listener
def _test_stop(environment: Environment, **_: Any) -> None:
    h = _harness()
    if isinstance(environment.shape_class, RateShape):
        environment.shape_class.reset()  # a test started next (web UI) runs it from the top
    if h.runs_users:
        h.stop_users_side()
    if isinstance(environment.runner, LocalRunner):
        h.check()
    elif isinstance(environment.runner, MasterRunner) and not environment.parsed_options.headless:
        # Web UI: the workers' last reports follow within a report interval.
        gevent.spawn_later(WORKER_REPORT_INTERVAL + 1, lambda: h.checked or h.check())


@events.quitting.add_listener
def _quitting(environment: Environment, **_: Any) -> None:
    h = _harness()
    if isinstance(environment.runner, MasterRunner) and not h.checked:
        h.check()
    for watcher in (*h.watchers, *h.sinks):
        watcher.stop()  # a quorum queue or a stream is deleted here
    if h.publisher is not None:
        h.publisher.close()


class TaskWorker(User):
    """One simulated task worker: a sync, then its publish, over and over."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.index = _harness().next_user()

    @task
    def sync_and_publish(self) -> None:
        h = _harness()
        assert h.traffic is not None
        h.traffic.run(self.index, lambda: h.per_user_rate)


class RateShape(LoadTestShape):
    """The offered rate over time: fixed (``--rate``), stepped (``--rates``) or the search.

    Users (``-u``, default 50) are the task workers running at once; they share the step's
    rate, which the shape sends them whenever it changes (and every tick, for late joiners).
    """

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self.reset()

    def reset(self) -> None:
        """Forget the plan: the next tick starts it over."""
        self._plan: Plan | None = None
        self._step: tuple[float, float] | None = None
        self._index = 0
        self._began = 0.0
        self._began_at = 0.0  # Unix time, as in the snapshots
        self._warm = False
        self._e2e: dict[str, Any] | None = None  # the watcher at the end of the warm-up
        self._resting: tuple[float, float] | None = None  # (until, the step that follows)

    def _make_plan(self) -> Plan:
        o = self.runner.environment.parsed_options  # type: ignore[union-attr]
        bounds = Bounds(
            p99_ms=o.max_p99,
            drop_ratio=o.max_drop,
            reach=o.reach,
            fail_on=tuple(parse_fail_on(o.fail_on)) if o.fail_on else (),
        )
        if o.capacity:
            return CapacitySearch(
                start=o.start_rate,
                factor=o.rate_factor,
                max_rate=o.max_rate,
                step_time=o.step_time,
                warmup=o.warmup,
                refine=o.refine,
                cooldown=o.cooldown,
                bounds=bounds,
            )
        if o.rates:
            return Steps(parse_steps(o.rates), warmup=o.warmup, bounds=bounds)
        run_time = o.run_time or math.inf
        return Steps([(o.rate, run_time)], warmup=o.warmup, bounds=bounds)

    def _users(self) -> tuple[int, float]:
        o = self.runner.environment.parsed_options  # type: ignore[union-attr]
        users = o.num_users or 50
        return users, float(users)  # every user within a second: a step is its rate at once

    def _begin(self, step: tuple[float, float]) -> None:
        self._step = step
        self._index += 1
        self._began = self.get_run_time()
        self._began_at = time.time()
        self._warm = False
        self._e2e = None
        users, _ = self._users()
        log.info("step %d: %.0f reports/s for %s s", self._index, step[0], step[1])
        self._send_rate(step[0] / users)

    def _warmup(self) -> float:
        """Unmeasured seconds at the start of this step: ``--warmup``, at most a third."""
        assert self._plan is not None and self._step is not None
        return min(self._plan.warmup, self._step[1] / 3)

    def _send_rate(self, per_user: float) -> None:
        self.runner.send_message(RATE_MESSAGE, per_user)  # type: ignore[union-attr]

    def tick(self) -> tuple[int, float] | None:
        h = _harness()
        if self._plan is None:
            h.plan = self._plan = self._make_plan()
            first = self._plan.first()
            if first is None:
                return None
            self._begin(first)
        if self._resting is not None:  # an overloaded broker drains before the next step
            until, following = self._resting
            now = self.get_run_time()
            backlog = any(time.time() - w.last_received < _DRAINED for w in h.watchers)
            if now < until or (backlog and now < until + _MAX_REST):
                self._send_rate(0.0)
                return self._users()
            self._resting = None
            self._begin(following)
        assert self._step is not None
        rate, seconds = self._step
        elapsed = self.get_run_time() - self._began
        if not self._warm and elapsed >= self._warmup():
            self._warm = True
            self._e2e = h.watched()
        if elapsed >= seconds:
            result = self._measure(rate)
            following = self._plan.next(result)
            done = self._plan.results[-1] if self._plan.results else None
            if done is not None:
                verdict = "pass" if done.passed else f"FAIL ({done.why})"
                log.info(
                    "step %d: offered %.0f/s confirmed %.0f/s p99 %.1f ms drop %.4f: %s",
                    done.step,
                    done.offered,
                    done.confirmed,
                    done.p99,
                    done.drop_ratio,
                    verdict,
                )
            if following is None:
                self._finish()
                return None
            rest = self._plan.cooldown if done is not None and not done.passed else 0.0
            if rest > 0:
                log.info("step %d failed: %g s at rate 0 before the next step", done.step, rest)
                self._send_rate(0.0)
                self._resting = (self.get_run_time() + rest, following)
                return self._users()
            self._begin(following)
        else:
            self._send_rate(rate / self._users()[0])
        return self._users()

    def _measure(self, rate: float) -> StepResult:
        h = _harness()
        e2e = None
        now = h.watched()
        if now is not None and self._e2e is not None:
            e2e = (self._e2e, now)
        assert self._plan is not None
        pairs = window(h.history, self._began_at + self._warmup(), time.time())
        return measure(self._index, rate, pairs, _BOUNDS_MS, e2e)

    def _finish(self) -> None:
        """Say what the steps measured: console always, CSV/JSON with ``--csv``."""
        plan = self._plan
        assert plan is not None
        o = self.runner.environment.parsed_options  # type: ignore[union-attr]
        self._send_rate(0.0)
        lines = ["", f"rate steps ({plan.name})", *table(plan.results)]
        summary = {**plan.summary(), "queue_type": o.queue_type, "queues": o.queues}
        if isinstance(plan, CapacitySearch):
            best = plan.best
            if best is None:
                lines.append(f"capacity ({o.queue_type} queues): no step passed the bounds")
            else:
                lines.append(
                    f"capacity ({o.queue_type} queues): {best.confirmed:,.0f} reports/s "
                    f"sustained ({best.tasks:,.1f} tasks/s) at {best.offered:,.0f} offered; "
                    f"confirm latency ms p50 {best.p50:.2f} p90 {best.p90:.2f} p99 "
                    f"{best.p99:.2f} p99.9 {best.p999:.2f} max {best.max:.1f}; bounds: "
                    + ", ".join(str(b) for b in plan.bounds.checks)
                )
        elif o.fail_on:
            missed = [r for r in plan.results if not r.passed]
            if missed:
                lines.append(
                    f"--fail-on: {len(missed)} of {len(plan.results)} steps missed the bounds "
                    f"({missed[0].why}); exit code {FAILED_BOUNDS}"
                )
                self.runner.environment.process_exit_code = FAILED_BOUNDS  # type: ignore[union-attr]
            else:
                lines.append(f"--fail-on: every step met {o.fail_on}")
        print("\n".join(lines), flush=True)
        prefix = o.csv_prefix
        if prefix:
            for path in write_reports(prefix, summary):
                log.info("wrote %s", path)
