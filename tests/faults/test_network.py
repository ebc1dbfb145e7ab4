"""Network faults between client and broker, made by the TCP proxy in tests/proxy.py:
connection resets, a half-open (black-holed) link and a slow link."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid

import pytest

from streamer import Publisher, Report
from streamer.consumer import Consumer
from streamer.receiver import Receiver
from streamer.settings import Settings
from tests.faults.conftest import LONG, GcPauses, record
from tests.proxy import Proxy

RESETS = 50 if LONG else 10
CALL_LIMIT = 0.1  # seconds; see test_restart.py


def exchange_name() -> str:
    return f"streamer.faults.net.{uuid.uuid4().hex[:8]}"


def progress(task: str, n: int) -> Report:
    return Report(task_id=task, state="running", progress_report={"items_done": n})


class Streamer:
    """Publishes a round of progress for ``tasks`` every ``tick`` s; times every call."""

    def __init__(self, pub: Publisher, tasks: int, tick: float = 0.01) -> None:
        self.pub = pub
        self.tasks = [f"t{n}" for n in range(tasks)]
        self.tick = tick
        self.calls = 0
        self.worst = 0.0
        self.errors: list[BaseException] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        n = 0
        while True:
            n += 1
            for task in self.tasks:
                t0 = time.perf_counter()
                try:
                    self.pub.publish(progress(task, n))
                except BaseException as exc:
                    self.errors.append(exc)
                self.worst = max(self.worst, time.perf_counter() - t0)
                self.calls += 1
            await asyncio.sleep(self.tick)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        assert self.errors == [], "an exception reached a publish() caller"


async def until(check: object, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        await asyncio.sleep(0.005)
    return time.monotonic()


async def test_connection_resets_while_streaming(proxy: Proxy, gc_pauses: GcPauses) -> None:
    """Every live connection is reset, again and again: the publisher reconnects at once,
    re-sends the latest report of each task and accounts for every report; the fast receiver
    (through the same proxy) is back receiving after every reset."""
    reconnects: list[float] = []
    exchange = exchange_name()
    batches: list[float] = []
    receiver = Receiver(
        lambda deliveries: batches.append(time.monotonic()),
        settings=Settings(url=proxy.url, exchange=exchange),
    )
    receiving = asyncio.ensure_future(receiver.run())
    await until(receiver.consuming.is_set, 10)
    async with Publisher(proxy.url, exchange) as pub:
        stream = Streamer(pub, tasks=20)
        for n in range(RESETS):
            await asyncio.sleep(0.3)
            confirmed = pub.stats.confirmed
            await until(lambda: pub.stats.confirmed > confirmed, 5)  # noqa: B023
            reset_at = time.monotonic()
            await proxy.reset()
            back = await until(
                lambda: pub.stats.reconnects == n + 1 and pub.stats.channels == 1,  # noqa: B023
                5,
            )
            reconnects.append(back - reset_at)
            await until(lambda: bool(batches) and batches[-1] > back, 5)  # noqa: B023
        await stream.stop()
        assert await pub.flush(10)
        stats = pub.stats
    receiver.stop()
    await receiving
    assert receiver.reconnects == RESETS
    assert stats.published == stream.calls
    assert stats.balanced and stats.pending == 0, stats
    assert stats.reconnects == RESETS, stats
    assert stats.resent > 0, stats
    assert stream.worst < CALL_LIMIT, f"a publish() call took {stream.worst * 1000:.1f} ms"
    assert max(reconnects) < 2.0, reconnects
    record(
        "network_reset",
        resets=RESETS,
        reports_published=stats.published,
        reports_dropped_disconnected=stats.dropped_by_reason["disconnected"],
        reports_resent=stats.resent,
        max_reconnect_s=round(max(reconnects), 3),
        max_publish_call_ms=round(stream.worst * 1000, 3),
        longest_gc_pause_ms=round(gc_pauses.longest * 1000, 3),
    )


async def test_half_open_link_detected_within_two_heartbeats(proxy: Proxy) -> None:
    """The link goes silent but no socket closes: only heartbeats can tell.

    The publisher must give the connection up within two heartbeat intervals of the last
    byte it received (measured from the moment the proxy stopped forwarding, which is no
    earlier), then reconnect once the link works again.
    """
    heartbeat = 1
    detected: list[float] = []
    async with Publisher(proxy.url, exchange_name(), heartbeat=heartbeat) as pub:
        stream = Streamer(pub, tasks=5, tick=0.05)
        for _ in range(3):
            await until(lambda: pub.stats.connections == 1, 5)
            await asyncio.sleep(0.5)
            proxy.blackhole = True
            silent_from = time.monotonic()
            gone = await until(lambda: pub.stats.channels == 0, 10)
            detected.append(gone - silent_from)
            proxy.blackhole = False
        await until(lambda: pub.stats.connections == 1, 5)
        await stream.stop()
        assert await pub.flush(10)
        assert pub.stats.balanced and pub.stats.reconnects == 3, pub.stats
    # 50 ms for the event loop to run the timer, nothing more.
    assert max(detected) <= 2 * heartbeat + 0.05, detected
    record(
        "half_open_publisher",
        heartbeat_s=heartbeat,
        detected_after_s=[round(d, 3) for d in detected],
    )


async def test_half_open_link_detected_by_the_consumer(proxy: Proxy) -> None:
    """The consumer (aiormq) gives a silent link up too, by aiormq's rule: no frame for
    3 × (heartbeat + 1) seconds, checked every max(1, heartbeat // 2) seconds; then it
    resumes by itself."""
    heartbeat = 1
    settings = Settings(url=proxy.url, exchange=exchange_name(), heartbeat=heartbeat)
    consumer = Consumer(lambda message: None, settings=settings)
    running = asyncio.ensure_future(consumer.run())
    try:
        await until(consumer.consuming.is_set, 10)
        proxy.blackhole = True
        silent_from = time.monotonic()
        gone = await until(lambda: not consumer.consuming.is_set(), 15)
        proxy.blackhole = False
        await until(consumer.consuming.is_set, 10)
    finally:
        consumer.stop()
        await running
    assert consumer.counters["reconnects"] == 1
    assert gone - silent_from <= 3 * (heartbeat + 1) + max(1, heartbeat // 2) + 0.5
    detected = round(gone - silent_from, 3)
    record("half_open_consumer", heartbeat_s=heartbeat, detected_after_s=detected)


async def test_half_open_link_detected_by_the_receiver(proxy: Proxy) -> None:
    """The fast receiver is on the shared core: a silent link is given up after two heartbeat
    intervals, as the publisher's is, and receiving resumes by itself."""
    heartbeat = 1
    settings = Settings(url=proxy.url, exchange=exchange_name(), heartbeat=heartbeat)
    receiver = Receiver(lambda deliveries: None, settings=settings)
    running = asyncio.ensure_future(receiver.run())
    try:
        await until(receiver.consuming.is_set, 10)
        proxy.blackhole = True
        silent_from = time.monotonic()
        gone = await until(lambda: not receiver.consuming.is_set(), 15)
        proxy.blackhole = False
        await until(receiver.consuming.is_set, 10)
    finally:
        receiver.stop()
        await running
    assert receiver.reconnects == 1
    detected = round(gone - silent_from, 3)
    assert 2 * heartbeat - 0.1 <= detected <= 2 * heartbeat + 0.5, detected
    record("half_open_receiver", heartbeat_s=heartbeat, detected_after_s=detected)


def _streamer_memory() -> int:
    """Bytes currently allocated by streamer's own code (tracemalloc must be running)."""
    ours = [tracemalloc.Filter(True, "*/streamer/*")]
    snapshot = tracemalloc.take_snapshot().filter_traces(ours)
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.mark.timeout(120)
async def test_slow_link_keeps_memory_bounded(proxy: Proxy) -> None:
    """200 ms round trips: the link carries a fraction of what is offered. Pending reports
    stay under ``max_pending``, the rest coalesces or drops (counted), streamer's memory
    stays flat and confirms keep coming. (Call times are not judged here: tracing every
    allocation slows everything down; the other tests judge them.)"""
    proxy.latency = 0.1  # each way
    seconds = 30 if LONG else 10
    max_pending = 2000
    samples: list[tuple[int, int]] = []  # (pending, streamer bytes)
    async with Publisher(proxy.url, exchange_name(), max_pending=max_pending) as pub:
        stream = Streamer(pub, tasks=500, tick=0.01)  # offers up to 50,000 reports/s
        tracemalloc.start()
        try:
            for _ in range(seconds * 2):
                await asyncio.sleep(0.5)
                samples.append((pub.stats.pending, _streamer_memory()))
        finally:
            tracemalloc.stop()
        await stream.stop()
        during = pub.stats
        assert await pub.flush(30)
        stats = pub.stats
    settled = [size for _, size in samples[4:]]  # after 2 s of warm-up
    growth = settled[-1] - settled[0]
    assert max(pending for pending, _ in samples) <= max_pending, samples
    assert growth < 256 * 1024, f"streamer memory grew by {growth} bytes: {settled}"
    assert during.confirmed > 1000, during
    assert during.coalesced + during.dropped > 0, "the link was not the bottleneck"
    assert stats.balanced and stats.pending == 0, stats
    record(
        "slow_link",
        latency_each_way_s=0.1,
        seconds=seconds,
        reports_offered=stream.calls,
        reports_confirmed=stats.confirmed,
        reports_coalesced=stats.coalesced,
        reports_dropped=stats.dropped,
        max_pending=max(pending for pending, _ in samples),
        streamer_memory_kb_after_warmup=round(settled[0] / 1024),
        streamer_memory_growth_kb=round(growth / 1024, 1),
    )
