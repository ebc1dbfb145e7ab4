"""Failover in a two-node RabbitMQ cluster of private nodes.

Publisher and consumer are given both nodes' URLs. The node they use is stopped: both move
to the other node and go on, with no exception reaching a caller and every report accounted
for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest

from streamer import Publisher, Report
from streamer.consumer import Consumer, Message
from streamer.receiver import Receiver
from streamer.settings import Settings
from tests.broker import PrivateNode
from tests.faults.conftest import record


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[PrivateNode, PrivateNode]]:
    """Two private nodes clustered together (both run as ``rabbitmq``: same Erlang cookie)."""
    first, second = PrivateNode(prefix="streamer-c1"), PrivateNode(prefix="streamer-c2")
    with contextlib.ExitStack() as stack:
        stack.callback(first.close)  # closed last: second was stopped last, boots first
        stack.callback(second.close)
        with contextlib.ExitStack() as starting:  # both boot at once: half the wait
            from concurrent.futures import ThreadPoolExecutor

            pool = starting.enter_context(ThreadPoolExecutor(2))
            for future in [pool.submit(first.start), pool.submit(second.start)]:
                future.result()
        second.join(first)
        assert first.cluster_nodes() == sorted([first.name, second.name])
        yield first, second


def moved_over(pub: Publisher) -> bool:
    stats = pub.stats
    return stats.channels == 1 and stats.reconnects == 1


@pytest.mark.timeout(180)
async def test_failover_to_the_other_node(cluster: tuple[PrivateNode, PrivateNode]) -> None:
    first, second = cluster
    unique = uuid.uuid4().hex[:8]
    name = f"failover-{unique}"
    settings = Settings(
        url=(first.url, second.url),
        exchange=f"streamer.faults.cluster.{unique}",
        connection_name=name,
    )
    seen: list[tuple[float, str, int]] = []

    def on_message(message: Message) -> None:
        seen.append((time.monotonic(), message.report.task_id, message.report.seq))

    consumer = Consumer(on_message, settings=settings)
    consuming = asyncio.ensure_future(consumer.run())
    # The fast receiver fails over through the shared core (URLs in order), like the pool.
    batches: list[float] = []
    receiver = Receiver(lambda deliveries: batches.append(time.monotonic()), settings=settings)
    receiving = asyncio.ensure_future(receiver.run())
    errors: list[BaseException] = []
    worst = 0.0
    calls = 0
    async with Publisher(settings=settings) as pub:
        async with asyncio.timeout(15):
            await consumer.consuming.wait()
            await receiver.consuming.wait()
        on_first = await asyncio.to_thread(first.client_names)
        assert name in on_first and f"{name} consumer" in on_first, on_first
        assert f"{name} receiver" in on_first, on_first

        async def stream() -> None:
            nonlocal worst, calls
            n = 0
            while True:
                n += 1
                for t in range(10):
                    t0 = time.perf_counter()
                    try:
                        pub.publish(Report(task_id=f"c{t}", state="running"))
                    except BaseException as exc:
                        errors.append(exc)
                    worst = max(worst, time.perf_counter() - t0)
                    calls += 1
                await asyncio.sleep(0.01)

        streaming = asyncio.ensure_future(stream())
        try:
            await asyncio.sleep(1)
            assert seen, "nothing arrived before the failover"
            stopped = time.monotonic()
            stopping = asyncio.ensure_future(asyncio.to_thread(first.stop))
            async with asyncio.timeout(15):
                while pub.stats.channels:
                    await asyncio.sleep(0.005)
                lost = time.monotonic()
                while not moved_over(pub):
                    await asyncio.sleep(0.005)
            moved = time.monotonic()
            await stopping
            async with asyncio.timeout(15):
                while not (seen and seen[-1][0] > moved):
                    await asyncio.sleep(0.01)
            received = time.monotonic()
            async with asyncio.timeout(15):
                while not (batches and batches[-1] > moved):
                    await asyncio.sleep(0.01)
            receiver_back = time.monotonic()
        finally:
            streaming.cancel()
            await asyncio.gather(streaming, return_exceptions=True)
        on_second = await asyncio.to_thread(second.client_names)
        assert await pub.flush(10)
        stats = pub.stats
    consumer.stop()
    receiver.stop()
    await consuming
    await receiving
    assert errors == [], "an exception reached a publish() caller"
    assert name in on_second and f"{name} consumer" in on_second, on_second
    assert f"{name} receiver" in on_second, on_second
    assert receiver.reconnects == 1
    assert stats.published == calls and stats.balanced and stats.pending == 0, stats
    assert consumer.counters["reconnects"] == 1, consumer.counters
    assert worst < 0.1, f"a publish() call took {worst * 1000:.1f} ms"
    record(
        "cluster_failover",
        mode="two-node RabbitMQ cluster (join_cluster)",
        publisher_moved_after_losing_the_node_s=round(moved - lost, 3),
        publisher_moved_after_stop_began_s=round(moved - stopped, 3),
        consumer_received_after_stop_began_s=round(received - stopped, 3),
        receiver_received_after_stop_began_s=round(receiver_back - stopped, 3),
        reports_published=stats.published,
        reports_dropped=stats.dropped,
        max_publish_call_ms=round(worst * 1000, 3),
    )
