"""The dashboard page in real headless Chromium, against a `streamer dashboard` process.

Progress bars advance, finished tasks show finished, a task's markup shows as text and never
runs, and a burst of thousands of reports per second reaches the page within a couple of
seconds of the last one, in rate-limited batches. A screenshot of the page is saved under
tests/artifacts/ (its path is printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from streamer import Publisher, Report
from streamer.dashboard import Dashboard
from streamer.report import TaskError
from streamer.settings import load_settings
from streamer.simulate import Simulation, Tally, run_simulation
from tests.helpers import running_dashboard

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
XSS = "<script>alert(1)</script>"


def progress(done: int, total: int) -> dict[str, Any]:
    return {"content": {"items_done": done, "items_total": total}}


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: install the chromium package", pytrace=False)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.02)
    return result


def row(page: Page, task_id: str) -> Any:
    return page.locator(f'tr:has(td.id a[title="{task_id}"])')


async def bar_value(page: Page, task_id: str) -> float | None:
    value = await row(page, task_id).locator("progress").evaluate("bar => bar.position")
    return None if value < 0 else float(value)  # -1: indeterminate


async def test_page_shows_live_progress_and_keeps_up(
    broker_url: str, exchange: str, unique: str, free_port: int
) -> None:
    dialogs: list[str] = []
    problems: list[str] = []
    async with (
        running_dashboard(broker_url, exchange, free_port) as url,
        chromium() as browser,
        Publisher(broker_url, exchange) as pub,
    ):
        page = await browser.new_page(viewport={"width": 1400, "height": 900})

        async def on_dialog(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on(
            "console",
            lambda msg: problems.append(msg.text) if msg.type in ("error", "warning") else None,
        )
        await page.goto(url)
        await until(lambda: page.locator("#connection[data-status=live]").count())

        # One task, step by step: its bar advances, then it shows finished.
        task_id = f"sync-{unique}"
        labels: dict[str, Any] = {"tags": [XSS, "pulp:repository:zoo"], "worker_name": XSS}
        seen: list[float] = []
        for done in (10, 40, 75):
            pub.publish(
                Report(
                    task_id=task_id,
                    state="running",
                    task_type="pulp.server.managers.repo.sync.sync",
                    progress_report=progress(done, 100),
                    **labels,
                )
            )
            value = await until(
                lambda done=done: _at_least(bar_value(page, task_id), done / 100)  # type: ignore[misc]
            )
            seen.append(value)
        assert seen == sorted(seen) and seen[0] == pytest.approx(0.10) and seen[-1] == 0.75
        tr = row(page, task_id)
        ARTIFACTS.mkdir(exist_ok=True)
        running_shot = ARTIFACTS / "dashboard-running.png"
        await page.screenshot(path=str(running_shot))
        assert await tr.locator("td.items").text_content() == "75/100"
        assert await tr.locator("td.state").text_content() == "running"
        pub.publish(
            Report(
                task_id=task_id,
                state="finished",
                progress_report=progress(100, 100),
                **labels,
            )
        )
        await until(lambda: _equals(tr.locator("td.state").text_content(), "finished"))
        assert await bar_value(page, task_id) == 1.0
        assert await tr.locator(".pct").text_content() == "100%"

        # Markup from a task is text: shown literally, never parsed, never run; even as its id
        # (a valid one: no dot, wildcard or space), its type and its error.
        pub.publish(
            Report(
                task_id=XSS,
                state="error",
                task_type=XSS,
                error=TaskError(code="X", description=XSS),
                tags=[f'"><img src=x onerror=alert(2)>{unique}'],
            )
        )
        evil = row(page, XSS)
        await until(lambda: _equals(evil.locator("td.state").text_content(), "error"))
        # Cut at 12 characters, and still text.
        assert await evil.locator("td.id a").text_content() == "<script>ale…"
        assert await evil.locator("td.type").get_attribute("title") == XSS
        assert await evil.locator("td.error").text_content() == f"X: {XSS}"  # in the row
        tags = await evil.locator("td.tags").text_content()
        assert tags == f'"><img src=x onerror=alert(2)>{unique}'
        assert await page.locator("img").count() == 0
        assert await tr.locator("td.worker").text_content() == XSS
        assert await tr.locator("td.tags").text_content() == f"{XSS}, pulp:repository:zoo"
        assert await page.locator("script").count() == 2  # format.js and dashboard.js only
        assert await page.evaluate("document.body.innerHTML.includes('<script>alert')") is False

        # A burst: 50 syncs and their publishes, 100 reports each, as fast as the broker
        # confirms; the page must show every task's final state soon after the last report.
        before = await page.evaluate("window.streamerDashboard.stats.batches")
        started = time.monotonic()
        burst_shot = ARTIFACTS / "dashboard-burst.png"

        async def mid_burst() -> None:
            await asyncio.sleep(0.5)
            await page.screenshot(path=str(burst_shot))

        shooting = asyncio.ensure_future(mid_burst())
        async with Publisher(broker_url, exchange) as burst:
            tally = Tally()
            await run_simulation(
                burst.publish,
                Simulation(tasks=50, concurrency=50, updates=100, seed=7),
                throttle=burst.throttle,
                tally=tally,
            )
            await burst.flush(30)
            stats = burst.stats
        published = time.monotonic()
        await shooting
        ids = tally.task_ids

        async def page_final() -> float:
            await until(
                lambda: page.evaluate(
                    """ids => ids.every(id => {
                        const t = window.streamerDashboard.tasks.get(id);
                        return t !== undefined && t.end !== null;
                    })""",
                    ids,
                ),
                timeout=15,
            )
            return time.monotonic() - published

        async def server_final() -> float:
            async def check() -> bool:
                async with http.get(f"{url}api/tasks?state=active") as response:
                    return not (await response.json())["tasks"]

            await until(check, timeout=15)
            return time.monotonic() - published

        async with aiohttp.ClientSession() as http:
            lag, server_lag = await asyncio.gather(page_final(), server_final())
        batches = await page.evaluate("window.streamerDashboard.stats.batches") - before
        span = time.monotonic() - started
        # ... and the table says so: no active task left among the shown rows.
        await until(lambda: _equals(page.locator("tr[data-state=running]").count(), 0))
        summary = await page.locator("#summary").text_content()
        assert summary is not None and "102 tasks: 1 error, 101 finished" in summary

        # The filters narrow the table; the task page shows the same task, as text.
        await page.select_option("#state", "finished")
        await page.fill("#q", XSS)
        await until(lambda: _equals(page.locator("#tasks tbody tr").count(), 1))
        assert "state=finished" in page.url
        await page.select_option("#state", "")
        await page.fill("#q", "")
        await page.fill("#tag", "pulp:repository:zoo")
        await until(lambda: _equals(page.locator("#tasks tbody tr").count(), 1))
        await page.fill("#tag", "")
        await until(lambda: _equals(page.locator("#tasks tbody tr").count(), 102))
        shot = ARTIFACTS / "dashboard.png"
        await page.screenshot(path=str(shot), full_page=False)
        await page.goto(f"{url}tasks/{task_id}")
        await until(lambda: _equals(page.locator("#state").text_content(), "finished"))
        assert await page.locator("#worker").text_content() == XSS
        # Three `running` reports, then `finished`: two history lines, not four.
        assert await page.locator("#history tbody tr").count() == 2
        task_shot = ARTIFACTS / "dashboard-task.png"
        await page.screenshot(path=str(task_shot), full_page=True)
        await page.goto(url)
        await evil.locator("td.id a").click()  # the link to the task with markup for an id
        await until(lambda: _equals(page.locator("#state").text_content(), "error"))
        assert await page.locator("#task-id").text_content() == XSS
        assert await page.locator("#type").text_content() == XSS
        assert await page.locator("#error").text_content() == f"X: {XSS}"
        assert await page.locator("script").count() == 2  # format.js and task.js only
        await page.close()

    print(
        f"\nburst: {stats.published:,} reports in {published - started:.2f} s "
        f"({stats.published / (published - started):,.0f}/s, {stats.coalesced} coalesced); "
        f"board final {server_lag:.2f} s and page {lag:.2f} s after the last confirm; "
        f"{batches} batches in {span:.2f} s"
        f"\nscreenshots: {running_shot} {burst_shot} {shot} {task_shot}"
    )
    assert stats.published >= 9_000 and stats.dropped == 0
    # The page trails the server's board by one batch interval and a frame, not by a backlog
    # (the board's own lag is the broker and this machine's CPU: printed above).
    assert lag - server_lag < 1.0
    assert lag < 5
    assert batches <= span / 0.25 + 2  # at most 4 batches a second
    assert not dialogs
    assert not problems, problems


async def _at_least(value: Awaitable[float | None], minimum: float) -> float | None:
    got = await value
    return got if got is not None and got >= minimum - 1e-9 else None


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def test_page_says_since_when_the_broker_is_unreachable(free_port: int) -> None:
    """A refused broker: the page says "broker unreachable since HH:MM:SS" (local time) and
    the tooltip has the details (the password masked)."""
    settings = load_settings(env={}, url=f"amqp://guest:s3cret@127.0.0.1:{free_port}/")
    async with Dashboard(settings, port=0) as dash, chromium() as browser:
        page = await browser.new_page()
        await page.goto(dash.url)
        badge = page.locator("#connection[data-status=no-broker]")
        await until(lambda: badge.count())
        text = await until(lambda: _unreachable(badge))
        since = time.strftime("%H:%M:%S", time.localtime(dash.status.since))
        assert text == f"broker unreachable since {since}"
        title = await badge.get_attribute("title") or ""
        assert title.startswith(f"amqp://guest:***@127.0.0.1:{free_port}/ — attempt ")
        assert "refused" in title and "s3cret" not in title


async def _unreachable(badge: Any) -> str | None:
    text = str(await badge.text_content())
    return text if text.startswith("broker unreachable since ") else None
