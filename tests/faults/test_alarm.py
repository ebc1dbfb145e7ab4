"""A broker resource alarm: the node blocks publishing connections (connection.blocked).

tests/integration/test_blocked.py shows the asyncio publisher drops with reason ``blocked``
and resumes. Here both publishers stream through the alarm, and the figures are measured:
how long the slowest ``publish()`` call took while blocked, how many reports were dropped
as ``blocked``, and how soon confirms resume once the alarm clears.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from streamer import BackgroundPublisher, Publisher, Report
from streamer.settings import Settings
from tests.broker import PrivateNode
from tests.faults.conftest import GcPauses, record

CALL_LIMIT = 1.0  # seconds; see test_restart.py


def report(task: str, n: int) -> Report:
    return Report(task_id=task, state="running", progress_report={"n": n})


async def test_memory_alarm_blocks_drops_and_recovers(
    node: PrivateNode, gc_pauses: GcPauses
) -> None:
    unique = uuid.uuid4().hex[:8]
    settings = Settings(url=node.url, exchange=f"streamer.faults.alarm.{unique}", close_timeout=1)
    worst = {"fore": 0.0, "back": 0.0}
    errors: list[BaseException] = []
    calls = {"fore": 0, "back": 0}
    stop = threading.Event()
    bg = BackgroundPublisher(settings=settings)

    def timed(side: str, publish: object, r: Report) -> None:
        t0 = time.perf_counter()
        try:
            publish(r)  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)
        worst[side] = max(worst[side], time.perf_counter() - t0)
        calls[side] += 1

    def worker() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            for t in range(10):
                timed("back", bg.publish, report(f"b{t}", n))
            time.sleep(0.01)

    async with Publisher(settings=settings) as pub:

        async def stream() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                for t in range(10):
                    timed("fore", pub.publish, report(f"f{t}", n))
                await asyncio.sleep(0.01)

        thread = threading.Thread(target=worker)
        thread.start()
        streaming = asyncio.ensure_future(stream())
        try:
            await asyncio.sleep(0.5)
            assert pub.stats.confirmed > 0 and pub.stats.dropped == 0, pub.stats
            await asyncio.to_thread(node.set_memory_alarm)
            try:
                deadline = time.monotonic() + 20
                while True:
                    back = await asyncio.to_thread(lambda: bg.stats)
                    if pub.stats.dropped_by_reason["blocked"] and back.dropped_by_reason["blocked"]:
                        break
                    assert time.monotonic() < deadline, "the broker never blocked us"
                    await asyncio.sleep(0.05)
                blocked = {c["name"]: c["state"] for c in await asyncio.to_thread(node.connections)}
                await asyncio.sleep(2)  # stream on while blocked
                assert pub.stats.balanced
            finally:
                await asyncio.to_thread(node.clear_memory_alarm)
            cleared = time.monotonic()
            confirmed = pub.stats.confirmed
            back_confirmed = (await asyncio.to_thread(lambda: bg.stats)).confirmed
            while True:
                back = await asyncio.to_thread(lambda: bg.stats)
                if pub.stats.confirmed > confirmed and back.confirmed > back_confirmed:
                    break
                assert time.monotonic() < cleared + 20, "publishing did not resume"
                await asyncio.sleep(0.01)
            resumed = time.monotonic() - cleared
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await streaming
            await asyncio.to_thread(thread.join)
        assert await pub.flush(10)
        fore = pub.stats
    assert await asyncio.to_thread(bg.flush, 10)
    back = await asyncio.to_thread(lambda: bg.stats)
    await asyncio.to_thread(bg.close)

    assert errors == [], "an exception reached a publish() caller"
    assert set(blocked.values()) <= {"blocked", "blocking"} and blocked, blocked
    for stats, side in ((fore, "fore"), (back, "back")):
        assert stats.published == calls[side], stats
        assert stats.balanced and stats.pending == 0, stats
        assert stats.dropped_by_reason["blocked"] > 0, stats
        assert stats.dropped == stats.dropped_by_reason["blocked"], stats
    assert max(worst.values()) < CALL_LIMIT, worst
    record(
        "memory_alarm",
        reports_published=fore.published + back.published,
        dropped_blocked=fore.dropped_by_reason["blocked"] + back.dropped_by_reason["blocked"],
        max_publish_call_ms=round(worst["fore"] * 1000, 3),
        max_background_publish_call_ms=round(worst["back"] * 1000, 3),
        confirms_resumed_after_clear_s=round(resumed, 3),
        longest_gc_pause_ms=round(gc_pauses.longest * 1000, 3),
    )
