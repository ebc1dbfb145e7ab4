"""Progress in real headless Chromium: a 4-step sync's bar never goes back, a failure's text is
in its row, a parent reaches 100% only when its three children finished (a failed child is
counted in its roll-up), a silent task shows "stalled" within the bound and clears on its
next report.

The dashboard runs with ``STREAMER_STALL_AFTER=1`` (a task silent for max(1 s, 10 x its usual
interval) is stalled). Screenshots are saved under tests/artifacts/ (their paths printed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from playwright.async_api import Page

from streamer import Publisher, Report
from streamer.report import TaskError
from tests.browser.test_dashboard_browser import (
    ARTIFACTS,
    _equals,
    bar_value,
    chromium,
    row,
    until,
)
from tests.helpers import running_dashboard

STEPS = {"metadata": 4, "content": 40, "errata": 12, "publish": 4}


async def family_when(
    page: Page, task_id: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The page's roll-up of ``task_id``'s family, once ``ready`` says it is the one awaited."""

    async def check() -> dict[str, Any] | None:
        family = await page.evaluate(
            "id => (window.streamerDashboard.tasks.get(id) || {}).family || null",
            task_id,
        )
        return family if family and ready(family) else None

    result: dict[str, Any] = await until(check)
    return result


SAMPLES = 20


async def test_steps_never_go_back_errors_show_and_stalls_are_flagged(
    broker_url: str, exchange: str, unique: str, free_port: int
) -> None:
    env = {"STREAMER_STALL_AFTER": "1"}
    async with (
        running_dashboard(broker_url, exchange, free_port, env=env) as url,
        chromium() as browser,
        Publisher(broker_url, exchange) as pub,
    ):
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        await page.goto(url)
        await until(lambda: page.locator("#connection[data-status=live]").count())
        empty = await page.locator("#empty").text_content()
        assert empty is not None and exchange in empty and "tasks.#" in empty
        assert "guest:***@" in empty  # the broker, its password masked

        # A sync with its four steps declared ahead, sampled 20 times while it runs.
        sync_id = f"sync-{unique}"
        task = pub.task(sync_id, task_type="sync", steps=list(STEPS))
        task.start()
        await until(lambda: row(page, sync_id).count())
        samples: list[float] = []
        running = True

        async def sample() -> None:
            while running:
                value = await bar_value(page, sync_id)
                if value is not None:
                    samples.append(value)
                await asyncio.sleep(0.06)

        sampling = asyncio.ensure_future(sample())
        for name, total in STEPS.items():
            for done in range(1, total + 1):
                task.progress(done, total, step=name)
                await asyncio.sleep(0.04)
        await asyncio.sleep(0.5)
        running = False
        await sampling
        assert len(samples) >= SAMPLES, samples
        assert samples == sorted(samples), samples  # never backwards
        assert samples[-1] == 1.0 and samples[0] < 0.25
        await page.locator("#tasks thead th[data-sort=progress]").click()  # sortable
        assert await page.locator("#tasks thead th[aria-sort]").count() == 1
        await row(page, sync_id).locator("td.type").click()  # expands: one bar per step
        steps = page.locator("tr.steps li")
        await until(lambda: _equals(steps.count(), 4))
        assert await steps.locator(".step-name").all_text_contents() == list(STEPS)
        steps_shot = ARTIFACTS / "progress-steps.png"
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(steps_shot))
        task.finish()

        # Worker names: what tells them apart (the start every shown name shares is cut).
        for n in (1, 2):
            worker = f"reserved_resource_worker-{n}@pulp.example.net"
            pub.publish(
                Report(task_id=f"w{n}-{unique}", state="running", worker_name=worker, tags=["w"])
            )
        await page.fill("#tag", "w")  # just these two rows
        cell = row(page, f"w1-{unique}").locator("td.worker")
        await until(lambda: _equals(cell.text_content(), "…1@pulp.example.net"))
        await page.fill("#tag", "")
        for n in (1, 2):
            pub.publish(Report(task_id=f"w{n}-{unique}", state="finished", tags=["w"]))

        # A failure: its code and description in its row, not only in a tooltip.
        failed = f"failed-{unique}"
        error = TaskError(code="PLP0000", description="Invalid cross-device link")
        pub.publish(Report(task_id=failed, state="error", error=error))
        await until(
            lambda: _equals(
                row(page, failed).locator("td.error").text_content(),
                "PLP0000: Invalid cross-device link",
            )
        )

        # A parent and its three children: 100% only once every child finished; a failing
        # child shows its error in its row and in the parent's roll-up.
        for name, outcome in (("ok", "finished"), ("bad", "error")):
            parent = f"{name}-parent-{unique}"
            kids = [f"{name}-kid{n}-{unique}" for n in range(3)]
            pub.publish(Report(task_id=parent, state="running", spawned_tasks=kids))
            for kid in kids:
                pub.publish(
                    Report(
                        task_id=kid, state="running", progress_report={"c": {"done": 1, "total": 2}}
                    )
                )
            pub.publish(Report(task_id=parent, state="finished", spawned_tasks=kids))
            for kid in kids[:2]:
                pub.publish(Report(task_id=kid, state="finished"))
            family = await family_when(page, parent, lambda f: f["states"].get("finished") == 3)
            assert family["progress"] < 1.0, family  # the parent finished, a child has not
            last = Report(
                task_id=kids[2], state=outcome, error=error if outcome == "error" else None
            )
            pub.publish(last)
            family = await family_when(page, parent, lambda f: "running" not in f["states"])
            if outcome == "finished":
                assert family["progress"] == 1.0 and family["text"] == "4 of 4 finished"
            else:
                assert family["progress"] < 1.0 and family["text"] == "3 of 4 finished, 1 error"
                await until(
                    lambda kid=kids[2]: _equals(  # type: ignore[misc]
                        row(page, kid).locator("td.error").text_content(),
                        "PLP0000: Invalid cross-device link",
                    )
                )
                await row(page, parent).locator("td.type").click()  # expand: the children
                children = page.locator("ul.children li")
                await until(lambda c=children: _equals(c.count(), 3))  # type: ignore[misc]
                assert "Invalid cross-device link" in (await children.nth(2).text_content() or "")
        family_shot = ARTIFACTS / "progress-family.png"
        await page.screenshot(path=str(family_shot))

        # A worker that pauses mid-task: stalled within the bound, cleared by its next report.
        paused = f"paused-{unique}"
        for n in range(5):
            pub.publish(Report(task_id=paused, state="running", progress_report={"n": n}))
            await asyncio.sleep(0.05)
        await pub.flush(5)
        silent_from = time.monotonic()
        state = row(page, paused).locator("td.state")
        await until(lambda: _equals(state.text_content(), "stalled"), timeout=10)
        flagged_after = time.monotonic() - silent_from
        note = await row(page, paused).locator("td.error").text_content()
        assert note is not None and note.startswith("no report for")
        summary = await page.locator("#summary").text_content()
        assert summary is not None and "1 stalled" in summary
        stalled_shot = ARTIFACTS / "progress-stalled.png"
        await page.screenshot(path=str(stalled_shot))
        pub.publish(Report(task_id=paused, state="running"))
        await until(lambda: _equals(state.text_content(), "running"), timeout=10)
        assert not problems, problems
        await page.close()
    print(
        f"\n{len(samples)} samples of the sync's bar: {[round(s, 3) for s in samples]}; "
        f"stalled shown {flagged_after:.2f} s after the last report (bound 1 s + one batch)"
        f"\nscreenshots: {steps_shot} {family_shot} {stalled_shot}"
    )
    # The bound (1 s) plus the stream's batch interval (0.25 s) and the page's frame: a hang
    # or a missed re-send of the row would take the 10 s above.
    assert flagged_after < 5
