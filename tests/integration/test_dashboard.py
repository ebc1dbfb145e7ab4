"""`streamer dashboard` over HTTP against a real broker: API, history, events, auth, bounds.

The browser side is in tests/browser/test_dashboard_browser.py. The memory test streams
20,000 distinct tasks through a dashboard process; ``DASHBOARD_RSS_TASKS=100000`` runs the full
size:

    DASHBOARD_RSS_TASKS=100000 .venv/bin/python -m pytest -s \
        tests/integration/test_dashboard.py -k memory
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import aiormq
import psutil
import pytest

from streamer import Publisher, Report, encode
from streamer.dashboard import Auth, Dashboard, is_loopback
from streamer.dashboard.app import STEP_LOOK
from streamer.dashboard.stream import Subscriber
from streamer.settings import load_settings
from tests.helpers import dashboard_command, run_streamer, wait_healthy
from tests.proxy import Proxy


def progress(done: int, total: int) -> dict[str, Any]:
    return {"content": {"items_done": done, "items_total": total}}


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def dashboard(broker_url: str, exchange: str, **options: Any) -> AsyncIterator[Dashboard]:
    settings = load_settings(env={}, url=broker_url, exchange=exchange)
    options.setdefault("interval", 0.05)
    async with Dashboard(settings, port=0, **options) as dash:
        async with asyncio.timeout(10):
            await dash.consuming.wait()
        yield dash


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


async def test_api_shows_tasks_with_progress_and_history(
    broker_url: str, exchange: str, unique: str
) -> None:
    task_id = f"t-{unique}"
    async with (
        dashboard(broker_url, exchange, history=3) as dash,
        aiohttp.ClientSession() as http,
        Publisher(broker_url, exchange) as pub,
    ):
        for n in (1, 2, 3, 4):
            pub.publish(
                Report(
                    task_id=task_id,
                    state="running",
                    task_type="pulp.server.managers.repo.sync.sync",
                    progress_report=progress(n, 4),
                    tags=["pulp:repository:zoo"],
                    worker_name="worker-1",
                )
            )
        pub.publish(
            Report(
                task_id=task_id,
                state="finished",
                tags=["pulp:repository:zoo"],
                worker_name="worker-1",
            )
        )
        pub.publish(Report(task_id=f"other-{unique}", state="running", tags=["other"]))

        async def both_seen() -> bool:
            data = await get_json(http, f"{dash.url}api/tasks")
            states = {row["id"]: row["state"] for row in data["tasks"]}
            return states.get(task_id) == "finished" and f"other-{unique}" in states

        await until(both_seen)
        data = await get_json(http, f"{dash.url}api/tasks?state=finished")
        assert [row["id"] for row in data["tasks"]] == [task_id]
        row = data["tasks"][0]
        assert (row["done"], row["total"], row["progress"]) == (4, 4, 1.0)
        assert row["tags"] == ["pulp:repository:zoo"]
        assert row["seq"] == 5 and row["gaps"] == 0 and row["end"] is not None
        assert data["summary"]["by_state"] == {"finished": 1, "running": 1}
        assert data["summary"]["received"] == 6
        for query, expected in [
            ("state=active", [f"other-{unique}"]),
            ("state=ended", [task_id]),
            ("tag=other", [f"other-{unique}"]),
            ("q=ZOO", [task_id]),  # text search is case-insensitive, over tags too
            ("q=worker-1", [task_id]),
            ("limit=1", [f"other-{unique}"]),  # most recently updated first
        ]:
            data = await get_json(http, f"{dash.url}api/tasks?{query}")
            assert [row["id"] for row in data["tasks"]] == expected, query

        one = await get_json(http, f"{dash.url}api/tasks/{task_id}")
        assert one["task"]["state"] == "finished"
        assert one["report"]["task_id"] == task_id and one["report"]["seq"] == 5
        history = one["history"]
        assert [(e["first_seq"], e["seq"], e["state"], e["reports"]) for e in history] == [
            (1, 4, "running", 4),
            (5, 5, "finished", 1),
        ]  # one entry per run of reports in one state, not four identical lines
        assert all(e["latency"] is not None and e["latency"] >= 0 for e in history)
        assert all(e["first"] <= e["at"] for e in history)
        assert [s[0] for s in one["task"]["steps"]] == ["content"]  # [name, state, done, total]
        missing = await get_json(http, f"{dash.url}api/tasks/nobody-{unique}", status=404)
        assert "not" in missing["error"] or "no such" in missing["error"]
        async with http.get(f"{dash.url}tasks/{task_id}") as page:
            assert page.status == 200 and page.content_type == "text/html"


async def test_history_and_board_stay_bounded(broker_url: str, exchange: str) -> None:
    """Direct feeding (no broker traffic needed): the bounds are the dashboard's own."""
    async with dashboard(broker_url, exchange, history=4, history_tasks=3, max_tasks=5) as dash:
        for n in range(10):
            for seq in range(1, 8):  # running and suspended in turn: a history entry each
                state = "running" if seq % 2 else "suspended"
                report = Report(task_id=f"t{n}", state=state, seq=seq)
                dash._on_batch([delivery(report)])
        assert len(dash.board) == 5
        assert list(dash._history) == ["t7", "t8", "t9"]
        assert all(len(h) == 4 for h in dash._history.values())
        assert [e.seq for e in dash._history["t9"]] == [4, 5, 6, 7]


async def test_healthz_reports_the_broker_connection(broker_url: str, free_port: int) -> None:
    settings = load_settings(env={}, url=f"amqp://guest:guest@127.0.0.1:{free_port}/")
    async with Dashboard(settings, port=0) as dash, aiohttp.ClientSession() as http:
        body = await get_json(http, f"{dash.url}healthz", status=503)
        assert body["status"] == "connecting" and body["consuming"] is False
        async with http.get(dash.url) as page:  # the page itself still answers
            assert page.status == 200


async def test_metrics_and_malformed_messages(broker_url: str, exchange: str, unique: str) -> None:
    async with (
        dashboard(broker_url, exchange) as dash,
        aiohttp.ClientSession() as http,
        Publisher(broker_url, exchange) as pub,
    ):
        conn = await aiormq.connect(broker_url)
        try:
            channel = await conn.channel()
            junk: list[tuple[bytes, str | None]] = [
                (b"not json at all", None),
                (b'{"state": "running"}', "application/json"),  # no task_id
                (b"\xff\xfe", None),
                (b'{"task_id": "x", "state": "running"}', "text/plain"),
            ]
            for body, content_type in junk:
                await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=f"tasks.junk-{unique}",
                    properties=aiormq.spec.Basic.Properties(content_type=content_type),
                )
        finally:
            await conn.close()
        task_id = f"after-{unique}"
        pub.publish(Report(task_id=task_id, state="running", progress_report=progress(1, 2)))

        async def seen() -> bool:
            return dash.board.get(task_id) is not None and dash.summary().malformed == 4

        await until(seen)
        async with http.get(f"{dash.url}metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        assert 'streamer_board_tasks{state="running"} 1.0' in text
        assert "streamer_received_reports_total 1.0" in text
        for kind in ("not_json", "not_a_report", "not_utf8", "content_type"):
            assert f'streamer_received_malformed_total{{kind="{kind}"}} 1.0' in text
        assert f'streamer_task_progress_ratio{{task_id="{task_id}"}} 0.5' in text
        data = await get_json(http, f"{dash.url}api/tasks")
        assert data["summary"]["malformed"] == 4 and len(data["tasks"]) == 1
        assert (await get_json(http, f"{dash.url}healthz"))["status"] == "ok"


async def test_bindings_choose_what_is_shown(broker_url: str, exchange: str, unique: str) -> None:
    wanted, other = f"a-{unique}", f"b-{unique}"
    bindings = {"routing_keys": [f"tasks.{wanted}"]}
    async with (
        dashboard(broker_url, exchange, bindings=bindings) as dash,
        Publisher(broker_url, exchange) as pub,
    ):
        pub.publish(Report(task_id=other, state="running"))
        pub.publish(Report(task_id=wanted, state="running"))
        pub.publish(Report(task_id=wanted, state="finished"))
        await pub.flush(5)

        async def finished() -> bool:
            task = dash.board.get(wanted)
            return task is not None and task.finished

        await until(finished)
        await asyncio.sleep(0.2)
        assert dash.board.get(other) is None


async def read_events(
    response: aiohttp.ClientResponse, into: list[tuple[float, str, dict[str, Any]]]
) -> None:
    """Parse a text/event-stream into (arrival time, event name, data) tuples."""
    event, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line and data:
            into.append((time.monotonic(), event, json.loads(data)))
            event, data = "message", ""


async def test_events_are_batched_deduplicated_and_rate_limited(
    broker_url: str, exchange: str, unique: str
) -> None:
    tasks, updates = 50, 200  # 10,000 reports as fast as the broker confirms
    async with (
        dashboard(broker_url, exchange, interval=0.25) as dash,
        aiohttp.ClientSession() as http,
        http.get(f"{dash.url}events") as response,
        Publisher(broker_url, exchange) as pub,
    ):
        assert response.headers["Content-Type"] == "text/event-stream"
        events: list[tuple[float, str, dict[str, Any]]] = []
        reader = asyncio.ensure_future(read_events(response, events))
        try:
            await until(lambda: _true(bool(events)))
            assert events[0][1] == "snapshot"
            started = time.monotonic()
            for n in range(1, updates + 1):
                for t in range(tasks):
                    state = "finished" if n == updates else "running"
                    pub.publish(
                        Report(
                            task_id=f"{unique}-{t}",
                            state=state,  # type: ignore[arg-type]
                            progress_report=progress(n, updates),
                        )
                    )
                await pub.throttle(500)
            await pub.flush(10)
            published = time.monotonic()
            shown: dict[str, str] = {}

            async def converged() -> bool:
                shown.update((row["id"], row["state"]) for _, _, b in events for row in b["rows"])
                return sum(state == "finished" for state in shown.values()) == tasks

            await until(converged, timeout=10)
            lag = time.monotonic() - published
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    batches = [batch for _, name, batch in events if name == "message"]
    span = batches[-1]["now"] - batches[0]["now"]  # the server's clock: no client jitter
    print(
        f"\n{tasks * updates} reports in {published - started:.2f} s; {len(batches)} batches "
        f"over {span:.2f} s; stream final {lag:.2f} s after the last confirm; "
        f"dashboard received {dash.receiver.received}, folded {dash.board.reports}"
    )
    # Convergence is asserted above (within 10 s); how fast the page follows a burst is a
    # benchmark figure (bench/receive.py), not a timing target of the test suite.
    for batch in batches:
        ids = [row["id"] for row in batch["rows"]]
        assert len(ids) == len(set(ids))  # a task is sent once per batch, however busy
    # At most one batch per interval (0.25 s; the loop's timer may fire a hair early, hence
    # 0.24 in both bounds: a burst now fits in two intervals, 3 batches over 0.4999 s).
    # (A burst that all lands between two ticks makes one batch: nothing to space then.)
    gaps = [b["now"] - a["now"] for a, b in itertools.pairwise(batches)]
    assert all(gap >= 0.24 for gap in gaps), gaps
    assert len(batches) <= span / 0.24 + 1


def delivery(report: Report) -> tuple[int, str, str, bytes]:
    """One delivery as the receiver hands it over (tag, routing key, content type, body)."""
    return (1, f"tasks.{report.task_id}", "application/json", encode(report))


async def _true(value: bool) -> bool:
    return value


def test_a_slow_viewer_is_resynchronised_not_buffered() -> None:
    sub = Subscriber()
    for n in range(100):
        sub.offer(b"batch %d" % n)
    assert sub.resync and sub.batches.qsize() == 1
    assert sub.batches.get_nowait() == b""  # means: send a fresh snapshot


async def test_evicted_tasks_are_removed_from_pages(broker_url: str, exchange: str) -> None:
    async with (
        dashboard(broker_url, exchange, max_tasks=3, interval=0.05) as dash,
        aiohttp.ClientSession() as http,
        http.get(f"{dash.url}events") as response,
    ):
        events: list[tuple[float, str, dict[str, Any]]] = []
        reader = asyncio.ensure_future(read_events(response, events))
        try:
            await until(lambda: _true(bool(events)))
            for n in range(5):
                report = Report(task_id=f"t{n}", state="running", seq=1)
                dash._on_batch([delivery(report)])
                await asyncio.sleep(0.1)  # one batch each
            shown: set[str] = set()

            async def three_left() -> bool:
                shown.clear()
                for _, _, batch in events:
                    shown.update(row["id"] for row in batch["rows"])
                    shown.difference_update(batch["removed"])
                return shown == {"t2", "t3", "t4"}

            await until(three_left, timeout=5)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def test_token_auth(broker_url: str, exchange: str) -> None:
    async with (
        dashboard(broker_url, exchange, auth=Auth(token="s3cret-token")) as dash,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,  # an IP host
    ):
        assert "s3cret" not in repr(dash) and "s3cret" not in repr(dash.auth)
        for path in ("", "api/tasks", "events", "metrics", "tasks/x", "static/dashboard.js"):
            async with http.get(f"{dash.url}{path}") as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"] == "Bearer"
        async with http.get(f"{dash.url}healthz") as response:
            assert response.status == 200  # probes need no credentials
        bearer = {"Authorization": "Bearer s3cret-token"}
        async with http.get(f"{dash.url}api/tasks", headers=bearer) as response:
            assert response.status == 200
        wrong = {"Authorization": "Bearer nope"}
        async with http.get(f"{dash.url}api/tasks", headers=wrong) as response:
            assert response.status == 401
        # A browser: ?token= once, then the cookie; the token leaves the address bar.
        async with http.get(
            f"{dash.url}?token=s3cret-token&state=running", allow_redirects=False
        ) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/?state=running"
            cookie = response.cookies["streamer_dashboard"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            assert "s3cret" not in cookie.value
        async with http.get(f"{dash.url}api/tasks") as response:
            assert response.status == 200  # the session's cookie jar now holds it


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


async def test_basic_auth(broker_url: str, exchange: str) -> None:
    auth = Auth(basic=("alice", "pa:ss"))
    async with dashboard(broker_url, exchange, auth=auth) as dash, aiohttp.ClientSession() as http:
        async with http.get(dash.url) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith('Basic realm="streamer"')
        async with http.get(dash.url, headers=basic("alice", "pa:ss")) as response:
            assert response.status == 200
        for bad in (basic("alice", "nope"), basic("bob", "pa:ss")):
            async with http.get(dash.url, headers=bad) as response:
                assert response.status == 401
        garbage = {"Authorization": "Basic " + base64.b64encode(b"\xff").decode()}
        async with http.get(dash.url, headers=garbage) as response:
            assert response.status == 401


async def test_consumer_without_acks_keeps_the_newest_within_prefetch(
    broker_url: str, exchange: str, unique: str
) -> None:
    """The dashboard's consumer mode: no acks, and a slow callback never grows the inbox."""
    from streamer.consumer import Consumer, Message

    seen: list[int] = []

    async def slow(message: Message) -> None:
        seen.append(message.report.seq)
        await asyncio.sleep(0.005)

    settings = load_settings(env={}, url=broker_url, exchange=exchange)
    consumer = Consumer(slow, settings=settings, prefetch=10, no_ack=True)
    running = asyncio.ensure_future(consumer.run())
    try:
        async with asyncio.timeout(10):
            await consumer.consuming.wait()
        async with Publisher(broker_url, exchange) as pub:
            for n in range(300):
                pub.publish(Report(task_id=f"t-{unique}", state="running"))
                if n % 50 == 49:
                    await pub.flush(5)
            await pub.flush(5)

        async def settled() -> bool:
            counters = consumer.counters
            return counters["delivered"] + counters["dropped"] == 300

        await until(settled)
        await asyncio.sleep(0.1)
        assert consumer.counters["dropped"] > 0
        assert consumer.counters["acked"] == len(seen) == consumer.counters["delivered"]
        assert seen == sorted(seen) and seen[-1] == 300  # the oldest went, not the newest
    finally:
        consumer.stop()
        await running


async def test_survives_losing_the_broker(
    broker_url: str, exchange: str, unique: str, proxy: Proxy
) -> None:
    """The board outlives the connection; pages are told, and updates resume by themselves."""
    settings = load_settings(env={}, url=proxy.url, exchange=exchange)
    async with (
        Dashboard(settings, port=0, interval=0.05) as dash,
        aiohttp.ClientSession() as http,
        http.get(f"{dash.url}events") as response,
        Publisher(broker_url, exchange) as pub,
    ):
        events: list[tuple[float, str, dict[str, Any]]] = []
        reader = asyncio.ensure_future(read_events(response, events))
        try:
            async with asyncio.timeout(10):
                await dash.consuming.wait()
            pub.publish(Report(task_id=f"before-{unique}", state="running"))
            await until(lambda: _true(dash.board.get(f"before-{unique}") is not None))
            await proxy.stop()

            async def unhealthy() -> bool:
                async with http.get(f"{dash.url}healthz") as response:
                    return response.status == 503

            await until(unhealthy, timeout=5)
            await until(lambda: _true(events[-1][2]["summary"]["consuming"] is False))
            await proxy.start()
            async with asyncio.timeout(10):
                await dash.consuming.wait()
            await pub.flush(5)
            pub.publish(Report(task_id=f"after-{unique}", state="finished"))
            await until(lambda: _true(dash.board.get(f"after-{unique}") is not None))
            assert dash.board.get(f"before-{unique}") is not None
            assert dash.receiver.reconnects == 1
            assert (await get_json(http, f"{dash.url}healthz"))["status"] == "ok"
            await until(lambda: _true(events[-1][2]["summary"]["consuming"] is True))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("", False),
        ("no-such-host.invalid", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- the command ------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_streamer("dashboard", *args, env=env, timeout=30)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_refuses_a_non_loopback_address_without_auth(host: str, free_port: int) -> None:
    result = run_cli("--host", host, "--port", str(free_port))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not a loopback address" in result.stderr and "--token" in result.stderr


def test_bad_basic_auth_is_a_usage_error(free_port: int) -> None:
    result = run_cli("--basic-auth", "nopassword", "--port", str(free_port))
    assert result.returncode == 2
    assert "user:password" in result.stderr and len(result.stderr.strip().splitlines()) == 1


async def test_command_with_token_on_all_addresses_masks_it(
    broker_url: str, exchange: str, free_port: int
) -> None:
    secret = "tok-8c1f0e2d"
    async with (
        dashboard_command(
            broker_url,
            exchange,
            free_port,
            "--host",
            "0.0.0.0",
            env={"STREAMER_DASHBOARD_TOKEN": secret},
        ) as (proc, line),
        aiohttp.ClientSession() as http,
    ):
        assert line.startswith(f"dashboard on http://0.0.0.0:{free_port}/")
        assert "token *** required" in line and secret not in line
        assert "guest:***@" in line  # the broker password is masked too
        url = f"http://127.0.0.1:{free_port}/"
        await wait_healthy(http, url)
        async with http.get(f"{url}api/tasks") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {secret}"}
        async with http.get(f"{url}api/tasks", headers=headers) as response:
            assert response.status == 200
    assert proc.returncode == 0
    assert proc.stderr is not None and proc.stdout is not None
    rest = (await proc.stderr.read() + await proc.stdout.read()).decode()
    assert secret not in rest


async def test_command_basic_auth_is_masked_and_bindings_apply(
    broker_url: str, exchange: str, unique: str, free_port: int
) -> None:
    wanted, other = f"a-{unique}", f"b-{unique}"
    async with (
        dashboard_command(
            broker_url,
            exchange,
            free_port,
            "--basic-auth",
            "ops:hunter2-pw",
            "-b",
            f"tasks.{wanted}",
        ) as (proc, line),
        aiohttp.ClientSession(headers=basic("ops", "hunter2-pw")) as http,
        Publisher(broker_url, exchange) as pub,
    ):
        assert "basic auth ops:*** required" in line and "hunter2" not in line
        url = f"http://127.0.0.1:{free_port}/"
        await wait_healthy(http, url)
        pub.publish(Report(task_id=other, state="running"))
        pub.publish(Report(task_id=wanted, state="finished"))

        async def shown() -> bool:
            data = await get_json(http, f"{url}api/tasks")
            return [row["id"] for row in data["tasks"]] == [wanted]

        await until(shown)
        data = await get_json(http, f"{url}api/tasks")
        assert data["summary"]["received"] == 1  # the other task was never delivered
    assert proc.returncode == 0


async def test_command_fails_in_one_line_when_the_port_is_taken(
    broker_url: str, exchange: str
) -> None:
    settings = load_settings(env={}, url=broker_url, exchange=exchange)
    async with Dashboard(settings, port=0) as dash:
        result = await asyncio.to_thread(
            run_cli, "--url", broker_url, "-e", exchange, "--port", str(dash.port)
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamer: error: "), result.stderr


# -- memory -----------------------------------------------------------------------------------


async def test_memory_stays_bounded_while_100k_tasks_stream_through(
    broker_url: str, exchange: str, unique: str, free_port: int
) -> None:
    """RSS of a dashboard process while distinct tasks (3 reports each) stream through it.

    One task in ten never ends, so the board fills up with active tasks (to its 10,000) as
    well as finished ones (1,000).

    The default run streams 20,000 tasks; ``DASHBOARD_RSS_TASKS=100000`` the full size. A page
    is connected throughout, so the event stream's work is included. Publishing follows the
    dashboard's own count (never more than 6,000 reports ahead), so nothing is dropped and
    the figures are not flattered by lost reports.
    """
    total = int(os.environ.get("DASHBOARD_RSS_TASKS", "20000"))
    checkpoints = sorted({n for n in (20_000, 50_000, 100_000, total) if n <= total})
    rss: dict[int, float] = {}
    async with (
        dashboard_command(broker_url, exchange, free_port) as (proc, _),
        aiohttp.ClientSession() as http,
        Publisher(broker_url, exchange) as pub,
    ):
        url = f"http://127.0.0.1:{free_port}/"
        await wait_healthy(http, url)
        process = psutil.Process(proc.pid)
        events = await http.get(f"{url}events")
        drain = asyncio.ensure_future(_drain(events))
        try:
            rss[0] = process.memory_info().rss / 2**20
            started = time.monotonic()
            chunk = 500  # tasks per round: each of their reports goes out in its own batch
            for first in range(1, total + 1, chunk):
                ids = range(first, min(first + chunk, total + 1))
                for state, counts in (("running", None), ("running", (1, 2)), ("finished", (2, 2))):
                    for n in ids:
                        if state == "finished" and n % 10 == 0:
                            continue  # one task in ten never ends: the board fills up
                        pub.publish(
                            Report(
                                task_id=f"{unique}-{n}",
                                state=state,  # type: ignore[arg-type]
                                task_type="pulp.server.managers.repo.sync.sync",
                                progress_report=progress(*counts) if counts else {},
                                tags=[f"pulp:repository:repo-{n % 1000}", "pulp:action:sync"],
                                worker_name=f"reserved_resource_worker-{n % 8}@host",
                            )
                        )
                    await pub.throttle(chunk)  # written before the next report of each task
                await _caught_up(http, url, pub.stats.confirmed - 6000)
                if ids[-1] in checkpoints:
                    await pub.flush(30)
                    await _caught_up(http, url, pub.stats.confirmed)
                    rss[ids[-1]] = process.memory_info().rss / 2**20
            elapsed = time.monotonic() - started
            health = await get_json(http, f"{url}api/tasks?limit=1")
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
            events.close()
    figures = ", ".join(f"{n:,} tasks: {mb:.1f} MB" for n, mb in rss.items())
    print(
        f"\nRSS {figures}; {pub.stats.confirmed:,} reports in {elapsed:.1f} s "
        f"({pub.stats.confirmed / elapsed:,.0f}/s); board {health['summary']['tasks']:,} tasks, "
        f"{health['summary']['evicted']:,} evicted"
    )
    assert pub.stats.coalesced == 0 and pub.stats.dropped == 0
    assert health["summary"]["received"] == total * 3 - total // 10
    assert health["summary"]["tasks"] <= 10_000
    # Bounded: whatever streams through, the process stays near its size after the first
    # 20,000 tasks (the board and the history are full by then).
    assert rss[checkpoints[-1]] < rss[checkpoints[0]] + 40, rss


async def _drain(response: aiohttp.ClientResponse) -> None:
    async for _ in response.content.iter_any():
        pass


async def _caught_up(http: aiohttp.ClientSession, url: str, count: int) -> None:
    async def check() -> bool:
        data = await get_json(http, f"{url}api/tasks?limit=1")
        return bool(data["summary"]["received"] >= count)

    await until(check, timeout=60)


async def test_families_and_groups_in_the_api(broker_url: str, exchange: str) -> None:
    """Rows name their parent and carry their family's roll-up; /api/groups rolls groups up."""
    async with dashboard(broker_url, exchange) as dash, aiohttp.ClientSession() as http:
        reports = [
            Report(task_id="p", state="finished", seq=1, spawned_tasks=["a", "b"], group_id="zoo"),
            Report(task_id="a", state="finished", seq=1, group_id="zoo"),
            Report(task_id="b", state="running", seq=1, progress_report=progress(1, 4)),
            Report(task_id="x", state="running", seq=1, group_id="other"),
        ]
        dash._on_batch([delivery(r) for r in reports])
        data = await get_json(http, f"{dash.url}api/tasks")
        rows = {row["id"]: row for row in data["tasks"]}
        assert rows["a"]["parent"] == "p" and rows["p"]["children"] == ["a", "b"]
        family = rows["p"]["family"]
        assert family["members"] == 3 and family["text"] == "2 of 3 finished, 1 running"
        assert family["progress"] == (1 + 1 + 0.25) / 3
        assert rows["x"]["family"] is None and rows["x"]["group"] == "other"
        groups = (await get_json(http, f"{dash.url}api/groups"))["groups"]
        assert [g["id"] for g in groups] == ["other", "zoo"]  # active first
        zoo = groups[1]
        assert zoo["members"] == 2 and zoo["progress"] == 1.0 and zoo["text"] == "2 of 2 finished"


async def test_history_notes_step_changes(broker_url: str, exchange: str) -> None:
    """A state change starts a history entry at once; a step change when the dashboard looks
    (every STEP_LOOK seconds), not per report."""
    async with dashboard(broker_url, exchange) as dash:
        steps = {"metadata": {"state": "NOT_STARTED"}, "content": {"state": "NOT_STARTED"}}
        seq = 0

        def send(state: str, **changes: dict[str, Any]) -> None:
            nonlocal seq
            seq += 1
            steps.update(changes)
            report = Report(task_id="t", state=state, seq=seq, progress_report=dict(steps))  # type: ignore[arg-type]
            dash._on_batch([delivery(report)])

        send("running", metadata={"items_done": 1, "items_total": 2})
        now = time.time()
        dash._sample(now)  # looks: still in metadata
        send("running", metadata={"items_done": 2, "items_total": 2, "state": "FINISHED"})
        dash._sample(now + STEP_LOOK / 2)  # too soon to look again
        send("running", content={"items_done": 1, "items_total": 3})  # (so: the same run)
        dash._sample(now + STEP_LOOK)  # looks: content is under way
        for n in range(2, 4):
            send("running", content={"items_done": n, "items_total": 3})
        dash._sample(now + 2 * STEP_LOOK)  # looks: every step done
        send("finished", content={"items_done": 3, "items_total": 3, "state": "FINISHED"})
        history = [(e.state, e.step, e.first_seq, e.seq) for e in dash._history["t"]]
        assert history == [
            ("running", "metadata", 1, 3),
            ("running", "content", 4, 5),  # from the first report after it looked
            ("finished", "", 6, 6),  # every step done
        ], history
