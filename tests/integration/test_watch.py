"""`watch` against a real broker: following a task ends with its exit code, junk never stops it."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pika
import pytest
from rich.console import Console

from streamer import Publisher, Report
from streamer.settings import Settings, load_settings
from streamer.watch import EXIT_STOPPED, watch
from tests.helpers import start_streamer


def recording(*, terminal: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, record=True, width=120, force_terminal=terminal)
    return console, out


def settings_for(broker_url: str, exchange: str) -> Settings:
    return load_settings(env={}, url=broker_url, exchange=exchange)


async def publish_until(
    pub: Publisher, report: Report, seen: Callable[[], bool], timeout: float = 5
) -> None:
    """Publish ``report`` again until the view shows it: the watcher binds its queue at its
    own pace, and reports published before that are (by design) never delivered to it."""
    async with asyncio.timeout(timeout):
        while not seen():
            pub.publish(report)
            await asyncio.sleep(0.05)


def progress(done: int, total: int) -> dict[str, Any]:
    return {"content": {"items_done": done, "items_total": total}}


@pytest.mark.parametrize(
    ("final", "code"), [("finished", 0), ("error", 10), ("canceled", 11), ("skipped", 12)]
)
async def test_follow_returns_the_exit_code_of_the_final_state(
    broker_url: str, exchange: str, unique: str, final: str, code: int
) -> None:
    console, out = recording()
    task_id = f"t-{unique}"
    watching = asyncio.ensure_future(
        watch(settings_for(broker_url, exchange), task_id=task_id, refresh=0.05, console=console)
    )
    async with Publisher(broker_url, exchange) as pub:
        running = Report(task_id=task_id, state="running", progress_report=progress(1, 4))
        await publish_until(pub, running, lambda: f"{task_id} running" in out.getvalue())
        pub.publish(Report(task_id="someone-else", state="error"))  # not followed
        for n in (2, 3, 4):
            pub.publish(Report(task_id=task_id, state="running", progress_report=progress(n, 4)))
        pub.publish(Report(task_id=task_id, state=final))  # type: ignore[arg-type]
        async with asyncio.timeout(5):
            assert await watching == code
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines[:-1]] == ["running", final]  # one per change
    assert lines[-1].startswith(f"{task_id} {final}: ")
    assert "0 malformed" in lines[-1]


async def test_malformed_messages_do_not_stop_following(
    broker_url: str, exchange: str, unique: str
) -> None:
    console, out = recording()
    task_id = f"t-{unique}"
    watching = asyncio.ensure_future(
        watch(settings_for(broker_url, exchange), task_id=task_id, refresh=0.05, console=console)
    )
    async with Publisher(broker_url, exchange) as pub:
        await publish_until(
            pub,
            Report(task_id=task_id, state="running"),
            lambda: f"{task_id} running" in out.getvalue(),
        )
        junk = [
            b"not json",
            b"\xff\xfe\x00",
            b'{"task_id": "a\xff", "state": "running"}',
            b'{"task_id": 42}',
            f'{{"task_id": "{task_id}", "state": "[bold]nope"}}'.encode(),
        ]
        # After the junk, on the same channel (so in order): a valid report that shows.
        marker = f'{{"task_id": "{task_id}", "state": "suspended"}}'.encode()
        await asyncio.to_thread(inject, broker_url, exchange, f"tasks.{task_id}", [*junk, marker])
        async with asyncio.timeout(5):
            while " suspended" not in out.getvalue():
                await asyncio.sleep(0.02)
        assert not watching.done()
        pub.publish(Report(task_id=task_id, state="finished"))
        async with asyncio.timeout(5):
            assert await watching == 0
    assert f"{task_id} finished: " in out.getvalue()
    assert "5 malformed" in out.getvalue()


def inject(url: str, exchange: str, key: str, bodies: list[bytes]) -> None:
    """Publish raw bodies with pika: what any other client (or a broken one) might send."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        for body in bodies:
            channel.basic_publish(exchange, key, body)
    finally:
        conn.close()


async def test_live_view_until_stopped(broker_url: str, exchange: str, unique: str) -> None:
    console, out = recording(terminal=True)
    stop = asyncio.Event()
    watching = asyncio.ensure_future(
        watch(settings_for(broker_url, exchange), refresh=0.05, console=console, stop=stop)
    )
    async with Publisher(broker_url, exchange) as pub:
        report = Report(
            task_id=f"a-{unique}", state="running", tags=["[bold]x[/bold]"], progress_report={}
        )
        await publish_until(pub, report, lambda: f"a-{unique}" in out.getvalue())
        for n in range(200):
            pub.publish(Report(task_id=f"b{n}-{unique}", state="finished"))
        await pub.flush(5)
        async with asyncio.timeout(5):
            while "201 tasks" not in console.export_text(clear=False):
                await asyncio.sleep(0.05)
    stop.set()
    async with asyncio.timeout(5):
        assert await watching == 0
    shown = console.export_text()
    assert "[bold]x[/bold]" in shown  # tags are data, not markup
    assert "more finished" in shown  # 201 rows capped


async def test_plain_summary_without_a_task(broker_url: str, exchange: str, unique: str) -> None:
    console, out = recording()
    stop = asyncio.Event()
    watching = asyncio.ensure_future(
        watch(settings_for(broker_url, exchange), refresh=0.05, console=console, stop=stop)
    )
    async with Publisher(broker_url, exchange) as pub:
        await publish_until(
            pub,
            Report(task_id=f"s-{unique}", state="running"),
            lambda: "1 task: 1 running" in out.getvalue(),
        )
    stop.set()
    async with asyncio.timeout(5):
        assert await watching == 0
    assert all("reports/s" in line for line in out.getvalue().splitlines())


@pytest.mark.parametrize(
    ("sig", "task", "code"),
    [
        (signal.SIGTERM, None, 0),
        (signal.SIGINT, None, 0),
        (signal.SIGTERM, "t1", EXIT_STOPPED),  # the followed task had not ended
        (signal.SIGINT, "t1", EXIT_STOPPED),
    ],
)
async def test_sigterm_and_sigint_stop_the_command_cleanly(
    broker_url: str, exchange: str, sig: int, task: str | None, code: int
) -> None:
    """Like every command: a signal stops the view (not a 143 or a traceback)."""
    args = ["watch", "--url", broker_url, "-e", exchange, "--refresh", "0.1"]
    proc = start_streamer(*args, *(["--task", task] if task else []))
    try:
        async with Publisher(broker_url, exchange) as pub:
            # consuming once a report shows (plain output: a summary line, or a state change)
            line = await asyncio.wait_for(_first_line_while(pub, proc, task or "t0"), 20)
        assert line, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(sig)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr, stderr


async def _first_line_while(pub: Publisher, proc: subprocess.Popen[str], task_id: str) -> str:
    """Publish a running report of ``task_id`` until the command prints a line about it."""
    assert proc.stdout is not None
    reading = asyncio.ensure_future(asyncio.to_thread(proc.stdout.readline))
    while not reading.done():
        pub.publish(Report(task_id=task_id, state="running"))
        await asyncio.sleep(0.1)
    return reading.result()
