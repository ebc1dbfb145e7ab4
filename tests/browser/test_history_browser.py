"""A dashboard started after the work was done, in real headless Chromium: with the exchange's
history on, it lists every task that ran before it started (200 simulated syncs and
publishes), each in its final state with its final progress, then goes on live."""

from __future__ import annotations

from typing import Any

from streamer.history import disable, enable
from streamer.settings import load_settings
from tests.browser.test_dashboard_browser import ARTIFACTS, chromium, until
from tests.helpers import run_streamer_async, running_dashboard

TERMINAL = {"finished", "error", "canceled", "skipped"}


async def test_late_dashboard_lists_every_task_of_the_history(
    broker_url: str, exchange: str, free_port: int
) -> None:
    settings = load_settings(env={}, url=broker_url, exchange=exchange)
    await enable(settings, 3600, 10**9)
    try:
        code, _, err = await run_streamer_async(
            "simulate", "--url", broker_url, "-e", exchange, "--tasks", "100", "--seed", "7",
            timeout=120,
        )  # fmt: skip
        assert code == 0, err
        async with running_dashboard(broker_url, exchange, free_port) as url, chromium() as b:
            page = await b.new_page(viewport={"width": 1400, "height": 900})
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            await page.goto(url)

            async def everything() -> list[dict[str, Any]] | None:
                tasks: list[dict[str, Any]] = await page.evaluate(
                    "() => [...window.streamerDashboard.tasks.values()]"
                )
                done = [t for t in tasks if t["state"] in TERMINAL]
                return tasks if len(tasks) == 200 and len(done) == 200 else None

            tasks = await until(everything, timeout=30)
            await until(lambda: page.locator("#connection[data-status=live]").count())
            await page.screenshot(path=str(ARTIFACTS / "history-late-dashboard.png"))
            print(f"screenshot: {ARTIFACTS / 'history-late-dashboard.png'}")
            finished = [t for t in tasks if t["state"] == "finished"]
            assert finished and all(t["progress"] == 1.0 for t in finished)
            assert all(t["end"] is not None for t in tasks)
            assert await page.locator("#tasks tbody td.id").count() == 200  # all rows shown
            assert await page.locator("#empty").is_hidden()
            assert not problems, problems
    finally:
        await disable(settings)
