"""The locust harness in loadtest/, run for real against the broker, in subprocesses.

Locust monkey-patches the interpreter with gevent, so it never runs inside pytest: every test
starts ``python -m locust`` (or a small gevent script) and reads what it printed and wrote.
Some go through ``streamer loadtest`` (the same locust, on the installed harness) to show that
its modes reach locust whole; tests/integration/test_wheel.py runs it from a wheel.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from loadtest.watcher import Watcher
from streamer import Publisher, Report
from tests.helpers import free_port as _free_port
from tests.helpers import streamer_command
from tests.proxy import Proxy

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = "loadtest/locustfile.py"


def _locust(*args: str, url: str, streamer: bool = False) -> subprocess.Popen[str]:
    """``locust -f loadtest/locustfile.py --host URL ARGS`` from the repository root, or with
    ``streamer``, ``streamer loadtest --url URL ARGS``."""
    env = {**os.environ, "STREAMER_URL": url, "PYTHONUNBUFFERED": "1"}
    if streamer:
        command = streamer_command("loadtest", "--url", url, *args)
    else:
        command = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--host", url, *args]
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C as in a terminal: a shell's background job (a CI runner's, say) starts with
        # SIGINT ignored, and a Python started so never sees KeyboardInterrupt.
        preexec_fn=_interruptible,
    )


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"locust did not finish in {timeout} s:\n{out[-4000:]}")
    return out


def _aggregated(prefix: Path) -> dict[str, str]:
    with Path(f"{prefix}_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    return rows["Aggregated"]


def _summary(prefix: Path) -> dict[str, Any]:
    return json.loads(Path(f"{prefix}_streamer.json").read_text())


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(what)
        await asyncio.sleep(0.05)


async def test_watcher_counts_reports_and_reconnects(
    broker_url: str, exchange: str, proxy: Proxy
) -> None:
    """The watcher (in its own thread, through a proxy) sees every report, and after the
    link is cut it connects again by itself and keeps counting."""
    watcher = Watcher(proxy.url, exchange)
    await asyncio.to_thread(watcher.start)
    tasks = [f"w{n}" for n in range(30)]
    try:
        async with Publisher(url=broker_url, exchange=exchange) as pub:
            for task in tasks:
                pub.publish(Report(task_id=task, state="running"))
            assert await pub.flush(timeout=10)
            await _until(lambda: watcher.snapshot()["received"] == 30, 10, "not received")
            await proxy.reset()
            await _until(lambda: watcher.reconnects == 1, 10, "the watcher did not reconnect")
            assert watcher.error is None
            for task in tasks:
                pub.publish(Report(task_id=task, state="finished"))
            assert await pub.flush(timeout=10)
            await _until(lambda: watcher.snapshot()["received"] == 60, 10, "not received after")
    finally:
        await asyncio.to_thread(watcher.stop)
    snap = watcher.snapshot()
    assert (snap["lost"], snap["out_of_order"], snap["duplicates"], snap["tasks"]) == (0, 0, 0, 30)
    assert {row["state"] for row in watcher.rows()} == {"finished"}


async def test_watcher_start_says_why_not(broker_url: str, free_port: int) -> None:
    """Refused credentials raise at once; nobody listening raises once the time is up."""
    parts = urlsplit(broker_url)
    bad = urlunsplit(parts._replace(netloc=f"nobody:wrong@{parts.hostname}:{parts.port or 5672}"))
    with pytest.raises(RuntimeError, match=r"could not start.*Authentication"):
        await asyncio.to_thread(Watcher(bad, "streamer.test.never").start)
    nobody = Watcher(f"amqp://guest:guest@127.0.0.1:{free_port}/", "streamer.test.never")
    with pytest.raises(TimeoutError, match=r"did not bind its queue within 1\.0 s"):
        await asyncio.to_thread(nobody.start, 1.0)


BRIDGE_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json
    import sys
    import time

    import gevent

    from loadtest.traffic import Traffic
    from streamer import BackgroundPublisher

    url, exchange = sys.argv[1], sys.argv[2]
    pub = BackgroundPublisher(url, exchange)
    traffic = Traffic(pub.publish, tick=0.01)
    lags = []
    running = True

    def ticker():
        # gevent's side: a greenlet asking to wake every 10 ms, while the loop thread works.
        while running:
            t = time.monotonic()
            gevent.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)

    def worker(index):
        while running:
            traffic.run(index, lambda: 250.0)  # 20 workers: 5,000 reports/s

    tick = gevent.spawn(ticker)
    workers = [gevent.spawn(worker, i) for i in range(20)]
    gevent.sleep(3)
    running = False
    gevent.joinall(workers)
    tick.join()
    assert pub.flush(timeout=10)
    during_load = sorted(lags)

    # The loop thread's side: one greenlet publishes, then hogs the hub without ever
    # yielding; the reports must still be confirmed meanwhile (on the OS thread).
    before = pub.stats.confirmed
    reports = (r for _ in range(10) for r in traffic.tasks(99))
    for _ in range(800):  # fewer than the confirm window: nothing coalesces
        pub.publish(next(reports))
    ticks_before = len(lags)
    t0 = time.monotonic()
    confirmed_after = None
    while time.monotonic() - t0 < 2.0:
        if pub.stats.confirmed - before >= 800:
            confirmed_after = time.monotonic() - t0
            break
    yielded = len(lags) != ticks_before
    stats = pub.stats
    pub.close()
    print(json.dumps({
        "lag_p99": during_load[int(len(during_load) * 0.99)],
        "lag_max": during_load[-1],
        "ticks": len(during_load),
        "published": stats.published,
        "confirmed": stats.confirmed,
        "balanced": stats.balanced,
        "dropped": stats.dropped,
        "pending": stats.pending,
        "confirmed_while_hogged_s": confirmed_after,
        "yielded": yielded,
    }))
    """
)


async def test_gevent_bridge_starves_neither_side(broker_url: str, exchange: str) -> None:
    """Greenlets keep their timing while the loop thread publishes, and the loop thread
    confirms reports while a greenlet holds the hub without yielding."""
    proc = subprocess.run(
        [sys.executable, "-c", BRIDGE_SCRIPT, broker_url, exchange],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["balanced"] and result["dropped"] == 0 and result["pending"] == 0, result
    assert result["published"] >= 10_000  # ~3 s at 5,000 reports/s, plus 800
    # gevent side: 10 ms sleeps overshoot by little (the machine is shared: generous bounds).
    assert result["ticks"] > 150
    assert result["lag_p99"] < 0.1, result
    # loop side: 800 reports confirmed while the hub never switched greenlets.
    assert not result["yielded"]
    assert result["confirmed_while_hogged_s"] is not None, result
    assert result["confirmed_while_hogged_s"] < 1.0, result


async def test_headless_run_totals_match_streamer_accounting(
    broker_url: str, exchange: str, tmp_path: Path
) -> None:
    """A short headless run: locust's stats table and CSV, the identity check, the watcher."""
    prefix = tmp_path / "run"
    args = ["--headless", "-u", "10", "--rate", "3000", "-t", "4s", "--csv", str(prefix)]
    out = _finish(_locust(*args, "--exchange", exchange, url=broker_url))
    assert "Aggregated" in out and "Response time percentiles" in out, out[-3000:]
    assert "streamer accounting at test stop" in out, out[-3000:]
    summary = _summary(prefix)
    snap, locust = summary["streamer"], summary["locust"]
    assert summary["identity_ok"], out[-3000:]
    assert snap["published"] > 5_000
    assert snap["pending"] == 0
    settled = snap["confirmed"] + snap["coalesced"] + sum(snap["dropped"].values())
    assert snap["published"] == settled
    assert int(_aggregated(prefix)["Request Count"]) == snap["published"] == locust["requests"]
    watched = summary["watcher"]
    assert watched["received"] == snap["confirmed"]
    assert watched["lost"] == snap["coalesced"] + sum(snap["dropped"].values())
    assert watched["out_of_order"] == 0 and watched["duplicates"] == 0
    with Path(f"{prefix}_tasks.csv").open() as f:
        tasks = list(csv.DictReader(f))
    assert len(tasks) >= 10 and sum(int(t["received"]) for t in tasks) == watched["received"]


async def test_drops_are_failures_named_by_reason(tmp_path: Path, free_port: int) -> None:
    """No broker at all: every report is a failure row ``dropped:disconnected``, the
    identity still holds, and locust exits 1 as it does for any failure."""
    prefix = tmp_path / "down"
    url = f"amqp://guest:guest@127.0.0.1:{free_port}/"
    args = ["--headless", "-u", "5", "--rate", "1000", "-t", "2s", "--csv", str(prefix)]
    proc = _locust(*args, "--no-watch", "--publisher-option", "connect_timeout=0.3", url=url)
    out = _finish(proc)
    assert proc.returncode == 1, out[-3000:]
    summary = _summary(prefix)
    snap = summary["streamer"]
    assert summary["identity_ok"], out[-3000:]
    assert snap["published"] > 500
    assert snap["dropped"]["disconnected"] == snap["published"] == summary["locust"]["failures"]
    with Path(f"{prefix}_failures.csv").open() as f:
        failures = list(csv.DictReader(f))
    assert [(row["Name"], int(row["Occurrences"])) for row in failures] == [
        ("dropped:disconnected", snap["published"])
    ]


async def test_the_publisher_is_sized_for_its_users_unless_set(
    broker_url: str, exchange: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness's one publisher gets the shared sizes; a ``STREAMER_*`` variable or a
    ``--publisher-option`` still sets its own."""
    args = ["--headless", "-u", "2", "--rate", "200", "-t", "1s", "--no-watch"]
    args += ["--exchange", exchange]
    out = _finish(_locust(*args, url=broker_url))
    assert "confirm window 10,000, max pending 20,000" in out, out[-3000:]
    monkeypatch.setenv("STREAMER_CONFIRM_WINDOW", "3000")
    out = _finish(_locust(*args, "--publisher-option", "max_pending=5000", url=broker_url))
    assert "confirm window 3,000, max pending 5,000" in out, out[-3000:]


async def test_master_and_two_workers_aggregate(
    broker_url: str, exchange: str, tmp_path: Path
) -> None:
    """``--master`` with two ``--worker`` processes (through ``streamer loadtest``), stepped
    rates: the master's totals are the sum of both workers' publishers, and locust's
    aggregated counts equal them."""
    prefix = tmp_path / "dist"
    port = _free_port()
    master = _locust(
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        "2",
        "--headless",
        "-u",
        "8",
        "--rates",
        "2000:3,4000:4",
        "--csv",
        str(prefix),
        "--exchange",
        exchange,
        url=broker_url,
        streamer=True,
    )
    workers = [
        _locust(
            "--worker",
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(port),
            url=broker_url,
            streamer=True,
        )
        for _ in range(2)
    ]
    out = _finish(master, 90)
    for worker in workers:
        _finish(worker, 30)
    summary = _summary(prefix)
    snap, processes = summary["streamer"], summary["processes"]
    assert summary["identity_ok"], out[-3000:]
    assert len(processes) == 2, processes.keys()
    assert all(p["published"] > 1_000 and p["final"] for p in processes.values())
    assert snap["published"] == sum(p["published"] for p in processes.values())
    assert int(_aggregated(prefix)["Request Count"]) == snap["published"]
    # The workers' latency buckets, merged at the master, count every confirm exactly once.
    buckets = zip(*(p["latency"] for p in processes.values()), strict=True)
    merged = [sum(counts) for counts in buckets]
    assert snap["latency"] == merged and sum(merged) == snap["confirmed"]
    assert summary["watcher"]["received"] == snap["confirmed"]
    steps = json.loads(Path(f"{prefix}_capacity.json").read_text())["steps"]
    assert [s["offered"] for s in steps] == [2000, 4000]


async def test_capacity_search_reports_the_highest_passing_rate(
    broker_url: str, exchange: str, tmp_path: Path
) -> None:
    """A tiny search (1k, 2k, 4k reports/s: the ceiling, run twice) against a sink queue, through
    ``streamer loadtest``: steps, result, CSV and JSON."""
    prefix = tmp_path / "cap"
    args = [
        "--headless",
        "-u",
        "8",
        "--capacity",
        "--start-rate",
        "1000",
        "--rate-factor",
        "2",
        "--max-rate",
        "4000",
        "--step-time",
        "2.5",
        "--warmup",
        "0.5",
        "--max-p99",
        "2000",
        "--max-drop",
        "0.5",
        "--reach",
        "0.5",
        "--csv",
        str(prefix),
        "--no-watch",
        "--sink",
    ]
    out = _finish(_locust(*args, "-e", exchange, url=broker_url, streamer=True))
    assert "capacity (classic queues): " in out and "reports/s sustained" in out, out[-3000:]
    report = json.loads(Path(f"{prefix}_capacity.json").read_text())
    # ... and the best run once more: it stands only if it passes again
    assert [s["offered"] for s in report["steps"]] == [1000, 2000, 4000, 4000]
    best = report["result"]
    assert best is not None and best["offered"] == 4000, report
    assert best["confirmed"] > 2000 and best["tasks"] > 0
    assert 0 < best["p50"] <= best["p90"] <= best["p99"] <= best["p999"] <= best["max"]
    with Path(f"{prefix}_capacity.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4


async def test_the_search_rests_after_a_failed_step(broker_url: str, exchange: str) -> None:
    """Bounds no step can meet: each failed step is followed by ``--cooldown`` seconds at
    rate 0, the search steps down and ends with no result."""
    args = [
        "--headless", "-u", "2", "--capacity", "--start-rate", "200", "--rate-factor", "2",
        "--max-rate", "400", "--step-time", "1.5", "--warmup", "0.3", "--cooldown", "1",
        "--fail-on", "p99<1us", "--no-watch", "--exchange", exchange,
    ]  # fmt: skip
    out = _finish(_locust(*args, url=broker_url))
    assert "capacity (classic queues): no step passed the bounds" in out, out[-3000:]
    # 200 (twice: a failure is repeated), then 100 (twice), then below the search's floor
    assert out.count("s at rate 0 before the next step") == 3, out[-3000:]


async def test_web_ui_through_streamer_loadtest(broker_url: str, exchange: str) -> None:
    """``streamer loadtest`` with locust's web UI: the run starts, the UI's streamer tab shows
    the accounting, and SIGTERM to the process started (it became locust) ends it cleanly."""
    port = _free_port()
    args = ["--web-host", "127.0.0.1", "--web-port", str(port), "--autostart", "-u", "2"]
    proc = _locust(*args, "--rate", "200", "-e", exchange, url=broker_url, streamer=True)
    rows: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while int(rows.get("confirmed", "0").replace(",", "")) < 100:
                    await asyncio.sleep(0.2)
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{port}/stats/requests") as r:
                            extended = (await r.json()).get("extended_stats") or []
                            rows = {row["metric"]: row["value"] for row in extended[0]["data"]}
    finally:
        proc.send_signal(signal.SIGTERM)
        out = _finish(proc, 30)
    assert "published" in rows and "watcher: received" in rows, (rows, out[-3000:])
    assert "streamer accounting at test stop" in out, out[-3000:]


def _queues(before: dict[str, str] | None = None) -> dict[str, str]:
    """The broker's queues named by the harness (name -> type), leaving out ``before``'s
    (another run's on the shared broker)."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "type", "--no-table-headers"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    rows = (line.split() for line in out.splitlines())
    found = {row[0]: row[1] for row in rows if len(row) == 2 and "streamer.loadtest." in row[0]}
    return {name: kind for name, kind in found.items() if name not in (before or {})}


@pytest.mark.parametrize("queue_type", ["quorum", "stream"])
async def test_queue_types_are_read_and_deleted_at_the_end(
    broker_url: str, exchange: str, tmp_path: Path, queue_type: str
) -> None:
    """``--queue-type`` quorum / stream with ``--queues 2``: two named queues of that type,
    each read by its own reader (every report received twice), gone after the run; a bound
    that holds exits 0."""
    prefix = tmp_path / queue_type
    before = await asyncio.to_thread(_queues)
    args = ["--headless", "-u", "4", "--rate", "1000", "-t", "4s", "--warmup", "1"]
    proc = _locust(
        *args, "--queue-type", queue_type, "--queues", "2", "--fail-on", "reach>0.5",
        "--csv", str(prefix), "--exchange", exchange, url=broker_url,
    )  # fmt: skip
    seen: dict[str, str] = {}
    while len(seen) < 2 and proc.poll() is None:
        seen = await asyncio.to_thread(_queues, before)
    out = _finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert sorted(seen.values()) == [queue_type, queue_type], seen
    assert not set(seen) & set(await asyncio.to_thread(_queues)), "queues left behind"
    summary = _summary(prefix)
    snap, watched = summary["streamer"], summary["watcher"]
    assert summary["identity_ok"] and snap["confirmed"] > 2_000, out[-3000:]
    assert watched["received"] == 2 * snap["confirmed"] and watched["lost"] == 0
    assert f"watcher ({queue_type}, 2 queues" in out and "--fail-on: every step met" in out


async def test_ctrl_c_deletes_the_queues(broker_url: str, exchange: str) -> None:
    before = await asyncio.to_thread(_queues)
    proc = _locust(
        "--headless", "-u", "2", "--rate", "200", "-t", "40s", "--queue-type", "quorum",
        "--exchange", exchange, url=broker_url,
    )  # fmt: skip
    assert proc.stdout is not None
    started = []  # lines until the first step began: locust handles Ctrl-C from then on
    while not any("step 1:" in line for line in started) and proc.poll() is None:
        started.append(await asyncio.to_thread(proc.stdout.readline))
    seen = await asyncio.to_thread(_queues, before)
    proc.send_signal(signal.SIGINT)
    out = "".join(started) + _finish(proc)
    assert list(seen.values()) == ["quorum"], out[-3000:]
    assert "Exiting due to CTRL+C interruption" in out, out[-3000:]  # not at -t
    assert not set(seen) & set(await asyncio.to_thread(_queues)), "queue left behind"


async def test_fail_on_exits_3_when_a_bound_is_missed_and_2_when_it_is_not_one(
    broker_url: str, exchange: str
) -> None:
    args = ["--headless", "-u", "2", "--rate", "500", "-t", "3s", "--warmup", "1"]
    proc = _locust(*args, "--fail-on", "p99<1us", "--exchange", exchange, url=broker_url)
    out = _finish(proc)
    assert proc.returncode == 3, out[-3000:]
    assert "--fail-on: 1 of 1 steps missed the bounds (p99 " in out
    proc = _locust(*args, "--fail-on", "p99>1ms", "--exchange", exchange, url=broker_url)
    out = _finish(proc)
    assert proc.returncode == 2 and "--fail-on: p99 takes a < bound, got 'p99>1ms'" in out, out
