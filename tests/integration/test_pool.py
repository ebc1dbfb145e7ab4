"""No leaks: pooled connections are released on close, across forks and when forgotten."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import psutil
import pytest
import uvloop

from streamer import Publisher, Report
from streamer.pool import ConnectionPool, PoolOwner
from streamer.settings import Settings
from tests.integration.conftest import Collector, broker_connections


def open_fds() -> int:
    return psutil.Process().num_fds()


async def test_connection_name_and_channels_visible(
    broker_url: str, exchange: str, unique: str
) -> None:
    name = f"streamer-test-{unique}"
    async with Publisher(broker_url, exchange, connection_name=name, connections=2, channels=3):
        conns = await asyncio.to_thread(broker_connections, name)
        assert [c["channels"] for c in conns] == [3, 3]
        assert conns[0]["product"] == "streamer"
    assert await asyncio.to_thread(broker_connections, name) == []


async def test_open_close_cycles_leak_nothing(broker_url: str, exchange: str, unique: str) -> None:
    name = f"streamer-cycles-{unique}"
    async with Publisher(broker_url, exchange, connection_name=name):
        pass  # warm up: imports, DNS, the exchange
    gc.collect()
    fds_before = open_fds()
    for n in range(1000):
        async with Publisher(broker_url, exchange, connection_name=name) as pub:
            if n % 100 == 0:
                pub.publish(Report(task_id=f"c{n}", state="running"))
    gc.collect()
    assert open_fds() == fds_before
    assert await asyncio.to_thread(broker_connections, name) == []


async def test_unclosed_pool_warns(broker_url: str) -> None:
    pool = ConnectionPool(Settings(url=broker_url), PoolOwner())
    pool.start()
    assert await pool.wait_connected(5)
    with pytest.warns(ResourceWarning, match="unclosed streamer pool"):
        pool.__del__()
    await pool.close()


async def test_fork_child_gets_its_own_connection(
    broker_url: str,
    exchange: str,
    collector: Collector,
    unique: str,
) -> None:
    """The child never touches the parent's socket; both publish; the parent is unaffected."""
    name = f"streamer-fork-{unique}"
    async with Publisher(broker_url, exchange, connection_name=name) as pub:
        pub.publish(Report(task_id="parent", state="running"))
        assert await pub.flush(5)
        pid = os.fork()
        if pid == 0:  # the child: no pytest, no asserts; the exit code says it all
            code = 3
            try:
                inherited_closed = pub.closed
                pub.publish(Report(task_id="inherited", state="running"))  # counted, not sent

                def child() -> None:
                    nonlocal code

                    async def main() -> bool:
                        async with Publisher(
                            broker_url, exchange, connection_name=f"{name}-child"
                        ) as own:
                            for n in range(50):
                                own.publish(
                                    Report(
                                        task_id="child", state="running", progress_report={"n": n}
                                    )
                                )
                                await asyncio.sleep(0)
                            return await own.flush(5) and own.stats.confirmed >= 1

                    code = 0 if uvloop.run(main()) and inherited_closed else 4

                thread = threading.Thread(target=child)
                thread.start()
                thread.join()
            finally:
                os._exit(code)
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's connection survived the child's exit and still publishes.
        assert len(await asyncio.to_thread(broker_connections, name)) == 1
        pub.publish(Report(task_id="parent", state="finished"))
        assert await pub.flush(5)
        assert pub.stats.confirmed == 2
        assert pub.stats.dropped == 0
    received = await collector.wait_for(3)
    tasks = [body["task_id"] for _, body, _ in received]
    assert "child" in tasks and "inherited" not in tasks
    assert tasks.count("parent") == 2
