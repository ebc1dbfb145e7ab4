"""Broker restarts while publishers stream (DESIGN guarantees 1, 4 and 8 under a real outage).

A private node is stopped and started again and again, alternating a clean shutdown (clients
get connection.close) with a crash (SIGKILL: the socket just dies), while an asyncio
``Publisher`` and a ``BackgroundPublisher`` (fed by a worker thread) stream progress reports
for busy tasks, and a few quiet tasks say nothing after their first report. A consumer on a
durable queue (the way a dashboard that wants to resync is set up) watches, and so does the
fast receiver (on its own durable queue, with batched acks).

After every restart: both publishers reconnect within 2 s of the node being back, and the
consumer sees the latest report of every quiet task again, which only the publishers' re-send
can give it. Throughout: no exception reaches a caller and no ``publish()`` call blocks. At the
end: the accounting identity is exact, and the consumer's last report of every task is its
final one.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

from streamer import BackgroundPublisher, Publisher, Report
from streamer.amqp import Delivery
from streamer.consumer import Consumer, Message
from streamer.receiver import Receiver, ReportReader
from streamer.settings import Settings
from tests.broker import PrivateNode
from tests.faults.conftest import LONG, GcPauses, record

RESTARTS = 100 if LONG else 20
RECONNECT_LIMIT = 2.0  # seconds after the node is back
# A publish() that waited on the broker would take seconds (each outage lasts 5 s or more);
# the margin covers the OS giving our thread's CPU to the booting broker on 2 busy cores.
CALL_LIMIT = 1.0
TICK = 0.02  # seconds between two rounds of progress reports


@dataclass
class Stream:
    """What one publisher was asked to do, counted by the caller (not by the publisher)."""

    busy: list[str]
    quiet: list[str]
    published: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: list[BaseException] = field(default_factory=list)
    worst: float = 0.0
    slow: int = 0  # calls over 1 ms

    def send(self, publish: object, task: str, state: str = "running") -> None:
        self.published[task] += 1
        n = self.published[task]
        report = Report(
            task_id=task,
            state=state,  # type: ignore[arg-type]
            task_type="sync",
            progress_report={"content": {"items_done": n, "items_total": 10**6}},
        )
        t0 = time.perf_counter()
        try:
            publish(report)  # type: ignore[operator]
        except BaseException as exc:  # nothing may reach the caller: the assertions say so
            self.errors.append(exc)
        took = time.perf_counter() - t0
        self.worst = max(self.worst, took)
        self.slow += took > 0.001


class Seen:
    """The consumer's view: every report it received, with when it received it."""

    def __init__(self) -> None:
        self.reports: dict[str, list[tuple[float, int, str]]] = defaultdict(list)

    async def __call__(self, message: Message) -> None:
        self.add(message.report)

    def add(self, report: Report) -> None:
        self.reports[report.task_id].append((time.monotonic(), report.seq, report.state))

    def finals(self, seqs: dict[str, int]) -> bool:
        """Whether the last report seen of every task is its final one."""
        return all(
            self.reports[t] and self.reports[t][-1][1:] == (seq, "finished")
            for t, seq in seqs.items()
        )

    def resynced(self, tasks: list[str], since: float, seqs: dict[str, int]) -> list[str]:
        """Tasks whose latest report has not been seen again since ``since``."""
        return [
            t
            for t in tasks
            if not any(at > since and seq == seqs[t] for at, seq, _ in self.reports[t])
        ]


async def _until(check: object, timeout: float, what: str) -> float:
    """Poll ``check()`` every 10 ms; return when it became true (monotonic), or fail."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic()


@pytest.mark.timeout(60 + RESTARTS * 30)
async def test_publishers_and_consumer_survive_restarts(
    node: PrivateNode, gc_pauses: GcPauses
) -> None:
    unique = uuid.uuid4().hex[:8]
    exchange = f"streamer.faults.restart.{unique}"
    queue = f"streamer-faults-resync-{unique}"
    settings = Settings(url=node.url, exchange=exchange, connection_name=f"restart-{unique}")
    durable = {
        "durable": True,
        "auto_delete": False,
        "arguments": {"x-max-length": 100_000, "x-overflow": "drop-head"},
    }
    seen = Seen()
    consumer = Consumer(
        seen,
        bindings=[{"exchange": exchange, "queue": queue, "routing_keys": ["tasks.#"]}],
        queues={queue: durable},
        settings=settings,
    )
    # The fast receiver, on its own durable queue with batched acks: it must come back after
    # every restart too, and lose nothing the queue kept.
    received = Seen()
    reader = ReportReader(settings.max_body)

    def on_batch(deliveries: list[Delivery]) -> None:
        for _, _, report in reader(deliveries):
            received.add(report)

    rqueue = f"{queue}-receiver"
    receiver = Receiver(
        on_batch,
        settings=settings,
        bindings=[{"exchange": exchange, "queue": rqueue, "routing_keys": ["tasks.#"]}],
        queues={rqueue: durable},
        prefetch=1000,
        no_ack=False,
    )
    fore = Stream(busy=[f"a-busy{n}" for n in range(10)], quiet=[f"a-quiet{n}" for n in range(5)])
    back = Stream(busy=[f"b-busy{n}" for n in range(5)], quiet=[f"b-quiet{n}" for n in range(5)])
    consuming = asyncio.ensure_future(consumer.run())
    receiving = asyncio.ensure_future(receiver.run())
    await _until(consumer.consuming.is_set, 15, "the consumer did not start")
    await _until(receiver.consuming.is_set, 15, "the receiver did not start")
    bg = BackgroundPublisher(settings=settings)
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            for task in back.busy:
                back.send(bg.publish, task)
            time.sleep(TICK)

    reconnects: list[float] = []
    since_serving: list[float] = []
    async with Publisher(settings=settings) as pub:
        for task in fore.quiet:
            fore.send(pub.publish, task)
        for task in back.quiet:
            back.send(bg.publish, task)
        thread = threading.Thread(target=worker)
        thread.start()

        async def stream() -> None:
            while not stop.is_set():
                for task in fore.busy:
                    fore.send(pub.publish, task)
                await asyncio.sleep(TICK)

        streaming = asyncio.ensure_future(stream())
        quiet = fore.quiet + back.quiet
        try:
            await asyncio.sleep(1)
            for n in range(RESTARTS):
                stopped = time.monotonic()
                await asyncio.to_thread(node.kill if n % 2 else node.stop)
                await asyncio.sleep(0.3)  # reports published now are dropped, not queued
                await asyncio.to_thread(node.start)
                back_at = time.monotonic()
                await _until(
                    lambda: pub.stats.connections == 1,
                    10,
                    f"restart {n + 1}: the publisher did not reconnect",
                )
                while (await asyncio.to_thread(lambda: bg.stats)).connections != 1:
                    assert time.monotonic() < back_at + 10, "the background publisher did not"
                    await asyncio.sleep(0.01)
                connected = time.monotonic()
                reconnects.append(max(0.0, connected - back_at))
                since_serving.append(connected - node.serving_at)
                seqs = {**fore.published, **back.published}
                await _until(
                    lambda: not seen.resynced(quiet, stopped, seqs),  # noqa: B023
                    15,
                    f"restart {n + 1}: the consumer did not see every quiet task again",
                )
                await _until(
                    lambda: not received.resynced(quiet, stopped, seqs),  # noqa: B023
                    15,
                    f"restart {n + 1}: the receiver did not see every quiet task again",
                )
        finally:
            stop.set()
            await streaming
            await asyncio.to_thread(thread.join)
        for task in fore.busy + fore.quiet:
            fore.send(pub.publish, task, "finished")
        for task in back.busy + back.quiet:
            back.send(bg.publish, task, "finished")
        assert await pub.flush(10)
        assert await asyncio.to_thread(bg.flush, 10)
        fore_stats = pub.stats
        back_stats = bg.stats
        finals = {**fore.published, **back.published}
        await _until(lambda: seen.finals(finals), 15, "the consumer did not see every final report")
        await _until(
            lambda: received.finals(finals), 15, "the receiver did not see every final report"
        )
    await asyncio.to_thread(bg.close)
    consumer.stop()
    receiver.stop()
    await consuming
    await receiving

    assert fore.errors == [] and back.errors == [], "an exception reached a publish() caller"
    for stream_, stats in ((fore, fore_stats), (back, back_stats)):
        assert stats.published == sum(stream_.published.values()), stats
        assert stats.pending == 0 and stats.balanced, stats
        assert stats.reconnects >= RESTARTS, stats
        assert stats.dropped_by_reason["disconnected"] > 0, stats
    assert consumer.counters["reconnects"] >= RESTARTS, consumer.counters
    assert receiver.reconnects >= RESTARTS, receiver.reconnects
    assert reader.malformed.total == 0
    worst = max(fore.worst, back.worst)
    assert worst < CALL_LIMIT, f"a publish() call took {worst * 1000:.1f} ms"
    assert max(reconnects) <= RECONNECT_LIMIT, reconnects
    record(
        "restart",
        restarts=RESTARTS,
        reports_published=fore_stats.published + back_stats.published,
        reports_confirmed=fore_stats.confirmed + back_stats.confirmed,
        reports_dropped=fore_stats.dropped + back_stats.dropped,
        reports_resent=fore_stats.resent + back_stats.resent,
        max_publish_call_ms=round(fore.worst * 1000, 3),
        max_background_publish_call_ms=round(back.worst * 1000, 3),
        publish_calls_over_1ms=fore.slow + back.slow,
        longest_gc_pause_ms=round(gc_pauses.longest * 1000, 3),
        max_reconnect_after_node_ready_s=round(max(reconnects), 3),
        max_reconnect_after_port_open_s=round(max(since_serving), 3),
        median_reconnect_after_port_open_s=round(sorted(since_serving)[len(since_serving) // 2], 3),
        consumer_reconnects=consumer.counters["reconnects"],
        consumer_delivered=consumer.counters["delivered"],
        receiver_reconnects=receiver.reconnects,
        receiver_received=receiver.received,
    )
