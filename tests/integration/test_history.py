"""The exchange's history (a stream queue) against a real broker: `streamer history`, and
`listen`, `watch` and the dashboard reading it first, then live, with nothing twice or lost."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime

import aiohttp
import pytest

from streamer import Publisher
from streamer.history import disable, enable, stream_name, window
from streamer.settings import Settings, load_settings
from tests.helpers import run_streamer, run_streamer_async, running_dashboard, send_reports
from tests.integration.conftest import Collector


def settings_for(broker_url: str, exchange: str) -> Settings:
    return load_settings(env={}, url=broker_url, exchange=exchange)


@pytest.fixture
async def history(broker_url: str, exchange: str) -> AsyncIterator[Settings]:
    """The test exchange with a history (1 h); deleted after the test."""
    settings = settings_for(broker_url, exchange)
    await enable(settings, 3600, 10**9)
    yield settings
    await disable(settings)


def test_enable_status_disable(broker_url: str, exchange: str) -> None:
    args = ("--url", broker_url, "-e", exchange)
    assert run_streamer("history", "status", *args).returncode == 1
    enabled = run_streamer("history", "enable", *args, "--max-age", "1h", "--max-bytes", "1GB")
    assert enabled.returncode == 0, enabled.stderr
    assert f"{exchange}.history" in enabled.stdout
    again = run_streamer("history", "enable", *args, "--max-age", "1h", "--max-bytes", "1GB")
    assert again.returncode == 0, again.stderr  # idempotent
    try:
        other = run_streamer("history", "enable", *args, "--max-age", "2h")
        assert other.returncode == 2
        assert "another retention" in other.stderr and "history disable" in other.stderr
        assert len(other.stderr.strip().splitlines()) == 1

        async def publish() -> int:
            async with Publisher(broker_url, exchange) as pub:
                await send_reports(pub, ["a", "b"], range(1, 51), "finished")
                return pub.stats.confirmed

        sent = asyncio.run(publish())
        status = run_streamer("history", "status", *args)
        assert status.returncode == 0, status.stderr
        assert f"about {sent} messages" in status.stdout
        assert "oldest report" in status.stdout and "newest report" in status.stdout
    finally:
        gone = run_streamer("history", "disable", *args)
    assert gone.returncode == 0 and "deleted" in gone.stdout
    assert run_streamer("history", "status", *args).returncode == 1
    again = run_streamer("history", "disable", *args)
    assert again.returncode == 0 and "nothing to do" in again.stdout


@pytest.mark.parametrize("command", ["listen", "watch", "dashboard"])
def test_since_without_history_names_the_command_that_starts_one(
    broker_url: str, exchange: str, command: str, free_port: int
) -> None:
    extra = ("--port", str(free_port)) if command == "dashboard" else ()
    done = run_streamer(command, "--url", broker_url, "-e", exchange, "--since", "5m", *extra)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("streamer:")]
    assert len(errors) == 1 and "streamer history enable" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_setting_turns_history_on(broker_url: str, exchange: str, tmp_path: object) -> None:
    """history_max_age in the settings file: a receiving command declares the history."""
    config = f"{tmp_path}/streamer.toml"
    with open(config, "w") as f:
        f.write(f'url = "{broker_url}"\nexchange = "{exchange}"\nhistory_max_age = "10m"\n')
    try:
        done = run_streamer("listen", "--config", config, "--timeout", "0.5")
        assert done.returncode == 0, done.stderr
        status = run_streamer("history", "status", "--config", config)
        assert status.returncode == 0, status.stderr
        assert f"{exchange}.history" in status.stdout
    finally:
        run_streamer("history", "disable", "--config", config)


async def test_listen_since_prints_exactly_the_reports_from_then_on(
    history: Settings, broker_url: str, exchange: str, collector: Collector
) -> None:
    """Per task: nothing sent before T, nothing missing, nothing twice across the boundary
    between the replay and the live reports that arrive while it runs. What was sent is
    what a plain queue bound before the first report got (the publisher coalesces a task's
    superseded reports under pressure, so not every seq is sent)."""
    tasks = [f"task-{n}" for n in range(20)]
    async with Publisher(broker_url, exchange) as pub:
        await send_reports(pub, tasks, range(1, 101))  # before T
        await asyncio.sleep(0.3)
        since = time.time()
        await asyncio.sleep(0.3)
        await send_reports(pub, tasks, range(101, 1101))  # after T, before listen starts: 20,000
        stamp = datetime.fromtimestamp(since).astimezone().isoformat()
        listening = asyncio.ensure_future(
            run_streamer_async(
                "listen", "--url", broker_url, "-e", exchange, "--since", stamp, "--json",
                "--timeout", "12", timeout=60,
            )
        )  # fmt: skip
        await asyncio.sleep(0.5)  # it is replaying now: send live reports meanwhile
        await send_reports(pub, tasks, range(1101, 1301), "finished")
        code, out, err = await listening
        sent = pub.stats.confirmed
    assert code == 0, err
    assert pub.stats.coalesced == 0
    await collector.wait_for(sent)
    seen = Counter(
        (line["report"]["task_id"], line["report"]["seq"])
        for line in map(json.loads, out.splitlines())
    )
    twice = [key for key, n in seen.items() if n > 1]
    assert not twice, f"{len(twice)} reports printed twice, e.g. {twice[:3]}"
    expected = {
        (report["task_id"], report["seq"])
        for report in collector.reports()
        if report["sent_at"] >= since
    }
    assert len(expected) > 10_000 and {seq for _, seq in expected} >= {101, 1300}
    assert not set(seen) - expected, "reports sent before --since were printed"
    missing = expected - set(seen)
    assert not missing, f"{len(missing)} reports missing, e.g. {sorted(missing)[:3]}"
    assert "caught up with the history" in err


@pytest.mark.parametrize(("final", "code"), [("finished", 0), ("error", 10)])
async def test_watch_task_since_first_exits_at_once_with_its_outcome(
    history: Settings, broker_url: str, exchange: str, unique: str, final: str, code: int
) -> None:
    task_id = f"done-{unique}"
    async with Publisher(broker_url, exchange) as pub:
        await send_reports(pub, [task_id, f"other-{unique}"], range(1, 201), final)
    started = time.monotonic()
    done, out, err = await run_streamer_async(
        "watch", "--url", broker_url, "-e", exchange, "--task", task_id, "--since", "first",
        timeout=30,
    )  # fmt: skip
    took = time.monotonic() - started
    assert done == code, (out, err)
    assert f"{task_id} {final}" in out
    assert took < 10, f"took {took:.1f} s"  # not "waits forever": it exits when folded


async def test_dashboard_started_later_shows_the_history_by_default(
    history: Settings, broker_url: str, exchange: str, free_port: int
) -> None:
    tasks = [f"past-{n}" for n in range(30)]
    async with Publisher(broker_url, exchange) as pub:
        await send_reports(pub, tasks, range(1, 41), "finished")
    found = await window(history)
    assert found is not None and found.messages == 30 * 40
    async with (
        running_dashboard(broker_url, exchange, free_port) as url,
        aiohttp.ClientSession() as http,
    ):
        async with asyncio.timeout(15):
            while True:
                async with http.get(f"{url}api/tasks") as response:
                    body = await response.json()
                if body["summary"]["by_state"].get("finished") == 30:
                    break
                await asyncio.sleep(0.1)
        summary = body["summary"]
        assert summary["history"] == f"{stream_name(history)} from first"
        assert summary["replaying"] is None and summary["gaps"] == 0
        assert all(task["progress"] == 1.0 for task in body["tasks"])
        # Folded as it was then: the tasks ended when they were sent, not when replayed.
        newest = max(task["seen"] for task in body["tasks"])
        assert newest <= time.time() - 0.2
