"""The background publisher in synchronous workers: threads, forks, exit, gevent."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict

from streamer import Report
from streamer.embed import BackgroundPublisher
from tests.integration.conftest import Collector


def running(task: str, n: int) -> Report:
    return Report(task_id=task, state="running", progress_report={"n": n})


async def test_eight_threads_every_report_accounted_and_ordered(
    broker_url: str,
    exchange: str,
    collector: Collector,
) -> None:
    pub = BackgroundPublisher(broker_url, exchange)
    pub.publish(running("warm-up", 0))
    assert await asyncio.to_thread(pub.flush, 10)

    def worker(w: int) -> None:
        for n in range(2000):
            pub.publish(running(f"w{w}-{n % 5}", n))
            if n % 50 == 0:
                time.sleep(0.001)  # a worker does some work between reports

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert await asyncio.to_thread(pub.flush, 30)
    stats = pub.stats
    await asyncio.to_thread(pub.close)
    assert stats.published == 16_001
    assert stats.confirmed + stats.coalesced == 16_001
    assert stats.balanced and stats.pending == 0
    received = await collector.wait_for(stats.confirmed)
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for _, body, _ in received:
        seen[body["task_id"]].append((body["seq"], body["progress_report"]["n"]))
    assert len(seen) == 41
    for task, pairs in seen.items():
        assert pairs == sorted(pairs), f"{task}: out of order"
        assert len({s for s, _ in pairs}) == len(pairs), f"{task}: duplicate seq"
        if task != "warm-up":
            assert pairs[-1][1] >= 1995, f"{task}: last report missing"


async def test_broker_down_never_raises(free_port: int, exchange: str) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port}/"
    with BackgroundPublisher(url, exchange, connect_timeout=0.3, close_timeout=0.5) as pub:
        worst = 0.0
        for n in range(20_000):
            t0 = time.perf_counter()
            pub.publish(running(f"d{n % 10}", n))
            worst = max(worst, time.perf_counter() - t0)
            if n % 1000 == 0:
                await asyncio.sleep(0.05)
        assert await asyncio.to_thread(pub.flush, 5)
        stats = pub.stats
        assert stats.published == 20_000 and stats.confirmed == 0
        assert stats.balanced
        # Only real blocking (e.g. waiting for the connect timeout) fails here; what a call
        # costs with the broker down is measured by bench/test_call_timings.py.
        assert worst < 1.0, f"publish() blocked for {worst * 1000:.0f} ms"


def _child_publish(url: str, exchange: str, name: str, count: int) -> None:
    """Runs in a forked child: uses the publisher inherited from the parent."""
    pub = PARENT_PUBLISHER[0]
    for n in range(count):
        pub.publish(running(name, n))
        time.sleep(0.001)
    pub.publish(Report(task_id=name, state="finished"))
    if not pub.flush(10) or pub.stats.confirmed < 1:
        raise SystemExit(3)


PARENT_PUBLISHER: list[BackgroundPublisher] = []


async def test_fork_children_get_their_own_connection(
    broker_url: str,
    exchange: str,
    collector: Collector,
) -> None:
    """Created before fork, used in the parent, in a forked child and in a prefork pool of 4."""
    pub = BackgroundPublisher(broker_url, exchange)
    PARENT_PUBLISHER[:] = [pub]
    pub.publish(running("parent", 0))
    assert await asyncio.to_thread(pub.flush, 10)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_child_publish, args=(broker_url, exchange, "child", 20))
    child.start()
    await asyncio.to_thread(child.join, 30)
    assert child.exitcode == 0

    def pool_run() -> None:
        with ctx.Pool(4) as pool:
            pool.starmap(_child_publish, [(broker_url, exchange, f"pool{n}", 20) for n in range(8)])

    await asyncio.to_thread(pool_run)
    pub.publish(Report(task_id="parent", state="finished"))
    assert await asyncio.to_thread(pub.flush, 10)
    assert pub.stats.confirmed == 2 and pub.stats.dropped == 0
    await asyncio.to_thread(pub.close)
    finals: set[str] = set()
    async with asyncio.timeout(20):
        while len(finals) < 10:
            await asyncio.sleep(0.05)
            finals = {b["task_id"] for _, b, _ in collector.messages if b["state"] == "finished"}
    assert finals == {"parent", "child", *(f"pool{n}" for n in range(8))}


def _run_script(code: str, broker_url: str, exchange: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMER_URL": broker_url, "STREAMER_EXCHANGE": exchange}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_closed_at_interpreter_exit(
    broker_url: str,
    exchange: str,
    collector: Collector,
) -> None:
    done = await asyncio.to_thread(
        _run_script,
        """
        from streamer import Report
        from streamer.embed import BackgroundPublisher
        pub = BackgroundPublisher()
        for n in range(100):
            pub.publish(Report(task_id="atexit", state="running", progress_report={"n": n}))
        pub.publish(Report(task_id="atexit", state="finished"))
        # no close(), no flush(): the exit hook flushes
    """,
        broker_url,
        exchange,
    )
    assert done.returncode == 0, done.stderr
    async with asyncio.timeout(20):  # the exit hook flushed: the terminal report is on its way
        while not any(r["state"] == "finished" for r in collector.reports()):
            await asyncio.sleep(0.05)
    last = max(collector.reports(), key=lambda r: r["seq"])
    assert last["state"] == "finished"


async def test_works_under_gevent_monkey_patching(
    broker_url: str,
    exchange: str,
    collector: Collector,
) -> None:
    done = await asyncio.to_thread(
        _run_script,
        """
        from gevent import monkey
        monkey.patch_all()
        import gevent
        from streamer import Report
        from streamer.embed import BackgroundPublisher
        pub = BackgroundPublisher()
        def user(u):
            for n in range(200):
                pub.publish(Report(task_id=f"g{u}", state="running", progress_report={"n": n}))
                gevent.sleep(0)
            pub.publish(Report(task_id=f"g{u}", state="finished"))
        gevent.joinall([gevent.spawn(user, u) for u in range(5)])
        assert pub.flush(10), pub.stats
        s = pub.stats
        assert s.balanced and s.confirmed >= 5, s
        pub.close()
        print("ok", s.confirmed)
    """,
        broker_url,
        exchange,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")
    finals: set[str] = set()
    async with asyncio.timeout(10):
        while len(finals) < 5:
            await asyncio.sleep(0.05)
            finals = {b["task_id"] for _, b, _ in collector.messages if b["state"] == "finished"}


def test_worker_survives_broker_restart() -> None:
    """400+ reports per task while a (private) broker restarts: no exception reaches the
    worker, every report is accounted for, and publishing resumes after the restart."""
    from tests.broker import PrivateNode

    with PrivateNode(prefix="streamer-embed-restart") as node:
        pub = BackgroundPublisher(node.url, "streamer.restart", reconnect_max=0.5)
        errors: list[BaseException] = []
        published = 0

        def worker() -> None:
            nonlocal published
            try:
                for t in range(3):
                    with pub.task(f"restart{t}", task_type="sync") as task:
                        for n in range(1, 451):
                            task.progress(n, 450, step="content")
                            published += 1
                            time.sleep(0.004)
            except BaseException as exc:  # the assertion below reports it
                errors.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        time.sleep(0.5)
        node.restart()
        thread.join(60)
        assert not thread.is_alive()
        assert errors == []
        deadline = time.monotonic() + 15
        while pub.stats.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        confirmed = pub.stats.confirmed
        pub.publish(Report(task_id="after-restart", state="finished"))
        assert pub.flush(10)
        stats = pub.stats
        pub.close()
    assert stats.confirmed == confirmed + 1, "publishing did not resume after the restart"
    assert published == 1350
    assert stats.published == 1350 + 3 * 2 + 1  # + each task's start and finish, + the last
    assert stats.balanced
    assert stats.reconnects >= 1
    assert stats.dropped_by_reason["disconnected"] > 0
    assert stats.confirmed > 0


async def test_loop_woken_at_most_once_per_batch(broker_url: str, exchange: str) -> None:
    """A burst from a thread wakes the loop thread once per batch it drains, not per report."""
    pub = BackgroundPublisher(broker_url, exchange)
    pub.publish(running("wake", 0))
    assert await asyncio.to_thread(pub.flush, 10)
    loop = pub._loop
    assert loop is not None
    wakes = 0

    class CountingLoop:
        def call_soon_threadsafe(self, *args: object) -> object:
            nonlocal wakes
            wakes += 1
            return loop.call_soon_threadsafe(*args)  # type: ignore[arg-type]

        def __getattr__(self, name: str) -> object:
            return getattr(loop, name)

    pub._loop = CountingLoop()  # type: ignore[assignment]
    blocker = threading.Event()
    loop.call_soon_threadsafe(blocker.wait, 5)  # hold the loop thread while the burst lands

    def burst() -> None:
        for n in range(1, 1001):
            pub.publish(running("wake", n))
        blocker.set()

    await asyncio.to_thread(burst)
    assert wakes == 1, f"{wakes} wake-ups for one batch of 1,000 reports"
    pub._loop = loop
    assert await asyncio.to_thread(pub.flush, 10)
    assert pub.stats.confirmed + pub.stats.coalesced == 1001
    await asyncio.to_thread(pub.close)
