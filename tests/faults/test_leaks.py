"""No leaks (DESIGN guarantee 7), at volume: 10,000 pool open/close cycles leave the process's
file descriptors and the broker's connection and channel counts where they were; background
publishers started and closed again and again leave no thread or descriptor behind."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid

import psutil
import pytest

from streamer import BackgroundPublisher, Report
from streamer.pool import ConnectionPool, PoolOwner
from streamer.settings import Settings
from tests.broker import PrivateNode
from tests.faults.conftest import LONG, record

CYCLES = 50_000 if LONG else 10_000
AT_ONCE = 20  # pools opened and closed together, so that 10,000 cycles take seconds


def open_fds() -> int:
    return int(psutil.Process().num_fds())


def broker_counts(node: PrivateNode) -> tuple[int, int]:
    return len(node.connections()), node.channels_count()


@pytest.mark.timeout(600)
async def test_pool_open_close_cycles_leak_nothing(node: PrivateNode) -> None:
    unique = uuid.uuid4().hex[:8]
    settings = Settings(
        url=node.url,
        exchange=f"streamer.faults.leaks.{unique}",
        connection_name=f"leaks-{unique}",
        channels=2,
    )

    async def cycle() -> None:
        pool = ConnectionPool(settings, PoolOwner())
        pool.start()
        assert await pool.wait_connected(10), "a pool did not connect"
        await pool.close()

    await cycle()  # warm up: imports, the exchange
    gc.collect()
    fds, counts = open_fds(), await asyncio.to_thread(broker_counts, node)
    peak = 0
    started = time.monotonic()
    for n in range(CYCLES // AT_ONCE):
        await asyncio.gather(*(cycle() for _ in range(AT_ONCE)))
        if n % 100 == 0:
            peak = max(peak, open_fds() - fds)
    took = time.monotonic() - started
    gc.collect()
    fds_after = open_fds()
    # The broker notices a closed connection in its own time: give it a moment.
    deadline = time.monotonic() + 10
    while (after := await asyncio.to_thread(broker_counts, node)) != counts:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert fds_after == fds, f"{fds_after - fds} file descriptors leaked"
    assert after == counts, f"broker (connections, channels) before {counts}, after {after}"
    record(
        "pool_cycles",
        cycles=CYCLES,
        channels_per_connection=2,
        seconds=round(took, 1),
        fd_delta=fds_after - fds,
        peak_extra_fds_during=peak,
        broker_connection_delta=after[0] - counts[0],
        broker_channel_delta=after[1] - counts[1],
    )


@pytest.mark.timeout(300)
def test_background_publisher_cycles_leak_nothing(node: PrivateNode) -> None:
    cycles = 500 if LONG else 50
    exchange = f"streamer.faults.leaks.{uuid.uuid4().hex[:8]}"

    def cycle(n: int) -> None:
        with BackgroundPublisher(node.url, exchange) as pub:
            pub.publish(Report(task_id=f"bg{n}", state="finished"))
            assert pub.flush(10)

    cycle(0)
    gc.collect()
    fds, threads = open_fds(), threading.active_count()
    os_threads = psutil.Process().num_threads()
    connections = len(node.connections())
    for n in range(1, cycles + 1):
        cycle(n)
    gc.collect()
    deadline = time.monotonic() + 5  # a loop thread may still be on its way out
    while psutil.Process().num_threads() > os_threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_fds() == fds
    assert threading.active_count() == threads
    assert psutil.Process().num_threads() == os_threads
    while len(node.connections()) != connections and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    assert len(node.connections()) == connections
    record(
        "background_publisher_cycles",
        cycles=cycles,
        fd_delta=open_fds() - fds,
        os_thread_delta=psutil.Process().num_threads() - os_threads,
    )
