"""The publisher's guarantees (DESIGN.md), each against the real broker."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import time
from collections import defaultdict

import aiormq
import pika
import pytest

from streamer import BackgroundPublisher, Publisher, Report
from streamer.errors import InvalidReport
from tests.integration.conftest import Collector
from tests.proxy import Proxy


def report(task: str, state: str = "running", **progress: object) -> Report:
    return Report(task_id=task, state=state, task_type="sync", progress_report=dict(progress))


def assert_balanced(pub: Publisher) -> None:
    s = pub.stats
    assert s.published == s.confirmed + s.coalesced + s.dropped + s.pending, s


async def test_per_task_order_and_seq(broker_url: str, exchange: str, collector: Collector) -> None:
    """10,000 reports over 100 tasks: per task, seq strictly increases and the last arrives."""
    async with Publisher(broker_url, exchange) as pub:
        for n in range(100):
            for t in range(100):
                pub.publish(report(f"t{t}", "finished" if n == 99 else "running", n=n))
            await pub.throttle(200)
        assert await pub.flush(30)
        stats = pub.stats
    assert stats.published == 10_000
    assert stats.confirmed + stats.coalesced == 10_000
    received = await collector.wait_for(stats.confirmed)
    seqs: dict[str, list[int]] = defaultdict(list)
    for key, body, props in received:
        assert key == f"tasks.{body['task_id']}"
        assert props.correlation_id == body["task_id"]
        seqs[body["task_id"]].append(body["seq"])
    assert len(seqs) == 100
    for task, got in seqs.items():
        assert got == sorted(set(got)), f"{task}: seq not strictly increasing: {got[:20]}"
        assert got[-1] == 100, f"{task}: final report missing"


async def test_accounting_under_normal_load(broker_url: str, exchange: str) -> None:
    async with Publisher(broker_url, exchange) as pub:
        for n in range(5000):
            pub.publish(report(f"a{n % 50}", n=n))
            if n % 500 == 0:
                assert_balanced(pub)
                await asyncio.sleep(0)
        assert await pub.flush(30)
        assert_balanced(pub)
        assert pub.stats.pending == 0
        assert pub.stats.dropped == 0


async def test_coalescing_keeps_latest_and_terminal(
    broker_url: str,
    exchange: str,
    collector: Collector,
) -> None:
    """With a one-message window, a burst coalesces; the terminal report is never replaced."""
    async with Publisher(broker_url, exchange, channels=1, confirm_window=1) as pub:
        pub.publish(report("burst", n=0))
        await asyncio.sleep(0)  # written: the window is now full until its confirm
        for n in range(1, 1000):
            pub.publish(report("burst", n=n))
            if n % 100 == 0:
                assert_balanced(pub)
        pub.publish(report("burst", n=1000))
        pub.publish(report("burst", "finished"))  # supersedes n=1000
        pub.publish(report("burst", "running", after=True))  # queued behind, not replacing
        assert await pub.flush(30)
        stats = pub.stats
    assert stats.coalesced == 1000
    assert stats.confirmed == 2 + 1
    assert_balanced(pub)
    received = await collector.wait_for(3)
    assert [(body["state"], body["seq"]) for _, body, _ in received] == [
        ("running", 1),
        ("finished", 1002),
        ("running", 1003),
    ]


async def test_terminal_report_never_superseded(broker_url: str, exchange: str) -> None:
    async with Publisher(broker_url, exchange, channels=1, confirm_window=1) as pub:
        pub.publish(report("x", n=0))
        for n in range(50):  # many tasks finishing while the window is full
            pub.publish(report(f"f{n}", "finished"))
            pub.publish(report(f"f{n}", "running", late=n))
        assert await pub.flush(30)
        assert pub.stats.coalesced == 0
        assert pub.stats.confirmed == 101


async def test_outage_drops_and_never_blocks(broker_url: str, exchange: str, proxy: Proxy) -> None:
    """Connection lost: reports drop at once (counted), publish() never blocks, no exception.

    What a call costs during an outage is measured by bench/test_call_timings.py."""
    async with Publisher(proxy.url, exchange, reconnect_min=0.05, reconnect_max=0.2) as pub:
        pub.publish(report("o1"))
        assert await pub.flush(10)
        await proxy.stop()
        await asyncio.sleep(0.2)
        worst = 0.0
        for n in range(20_000):
            t0 = time.perf_counter()
            pub.publish(report(f"o{n % 10}", n=n))
            worst = max(worst, time.perf_counter() - t0)
            if n % 1000 == 0:
                await asyncio.sleep(0)
        assert pub.stats.dropped_by_reason["disconnected"] >= 19_000
        assert_balanced(pub)
        # Only real blocking (waiting on the network) fails here; not a timing target.
        assert worst < 1.0, f"publish() blocked for {worst * 1000:.0f} ms during an outage"
        await proxy.start()
        for _ in range(100):
            if pub.stats.connections:
                break
            await asyncio.sleep(0.05)
        assert pub.stats.connections == 1, "did not reconnect"
        pub.publish(report("o1", "finished"))
        assert await pub.flush(10)
        assert_balanced(pub)
        assert pub.stats.confirmed >= 2


async def test_inflight_reports_dropped_on_reset(
    broker_url: str, exchange: str, proxy: Proxy
) -> None:
    async with Publisher(proxy.url, exchange, reconnect_min=0.05) as pub:
        proxy.blackhole = True  # writes vanish: nothing gets confirmed
        for n in range(300):
            pub.publish(report(f"r{n}"))
        await asyncio.sleep(0.1)
        assert pub.stats.pending == 300
        await proxy.reset()
        await asyncio.sleep(0.1)
        assert pub.stats.dropped_by_reason["disconnected"] == 300
        assert pub.stats.pending == 0
        assert_balanced(pub)
        proxy.blackhole = False


async def test_latest_report_resent_after_reconnect(
    broker_url: str,
    exchange: str,
    collector: Collector,
    proxy: Proxy,
) -> None:
    async with Publisher(proxy.url, exchange, reconnect_min=0.05) as pub:
        for r in (report("active", n=1), report("active", n=2), report("done", "finished")):
            pub.publish(r)
            assert await pub.flush(10)
        await collector.wait_for(3)
        await proxy.reset()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if pub.stats.resent:
                break
        assert pub.stats.resent == 1
        assert_balanced(pub)
        received = await collector.wait_for(4)
    resent = received[3][1]
    assert (resent["task_id"], resent["seq"], resent["progress_report"]) == ("active", 2, {"n": 2})
    await asyncio.sleep(0.3)
    assert len(collector.messages) == 4, "re-sent more than once or re-sent a finished task"


async def test_first_reports_wait_for_the_first_connection(
    broker_url: str,
    exchange: str,
    collector: Collector,
) -> None:
    pub = Publisher(broker_url, exchange)
    starting = asyncio.ensure_future(pub.start())
    await asyncio.sleep(0)  # start() is now connecting
    for n in range(10):
        pub.publish(report("early", n=n))
    await starting
    assert await pub.flush(10)
    await pub.close()
    assert pub.stats.dropped == 0
    assert pub.stats.confirmed == 10, "a fresh worker's first reports were lost to start-up"
    received = await collector.wait_for(10)
    assert [body["progress_report"]["n"] for _, body, _ in received] == list(range(10))


async def test_no_broker_starts_disconnected_and_drops(free_port: int, exchange: str) -> None:
    url = f"amqp://guest:secret@127.0.0.1:{free_port}/"
    t0 = time.perf_counter()
    async with Publisher(url, exchange, connect_timeout=0.5, reconnect_min=0.1) as pub:
        assert time.perf_counter() - t0 < 2
        for n in range(1000):
            pub.publish(report(f"d{n}"))
        assert pub.stats.dropped_by_reason["disconnected"] == 1000
        assert await pub.flush(1)
        assert_balanced(pub)


async def test_bounded_pending(broker_url: str, exchange: str, proxy: Proxy) -> None:
    """The broker takes nothing: pending stops at max_pending, the rest drops as overflow."""
    async with Publisher(proxy.url, exchange, max_pending=500, close_timeout=0.2) as pub:
        proxy.blackhole = True
        for n in range(5000):
            pub.publish(report(f"b{n}"))
            if n % 250 == 0:
                await asyncio.sleep(0)
        assert pub.stats.pending == 500
        assert pub.stats.dropped_by_reason["overflow"] == 4500
        assert_balanced(pub)
    assert pub.stats.pending == 0
    assert pub.stats.dropped_by_reason["closed"] == 500
    assert_balanced(pub)


async def test_nacks_are_counted_drops(broker_url: str, exchange: str, unique: str) -> None:
    conn = await aiormq.connect(broker_url)
    ch = await conn.channel()
    await ch.exchange_declare(exchange, exchange_type="topic", durable=True)
    queue = f"streamer.test.reject.{unique}"
    await ch.queue_declare(
        queue, auto_delete=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await ch.queue_bind(queue, exchange, routing_key="tasks.#")
    try:
        async with Publisher(broker_url, exchange) as pub:
            for n in range(20):
                pub.publish(report(f"n{n}"))
            assert await pub.flush(10)
            assert pub.stats.dropped_by_reason["nacked"] == 20
            assert pub.stats.confirmed == 0
            assert_balanced(pub)
    finally:
        await ch.queue_delete(queue)
        await conn.close()


async def test_returns_are_counted_drops_when_mandatory(broker_url: str, exchange: str) -> None:
    async with Publisher(broker_url, exchange, mandatory=True) as pub:  # nothing bound
        for n in range(20):
            pub.publish(report(f"u{n}"))
        assert await pub.flush(10)
        assert pub.stats.dropped_by_reason["returned"] == 20
        assert_balanced(pub)


async def test_exchange_declared_when_missing(broker_url: str, exchange: str) -> None:
    async with Publisher(broker_url, exchange):
        pass
    conn = await aiormq.connect(broker_url)
    try:
        ch = await conn.channel()
        await ch.exchange_declare(exchange, passive=True)  # raises if it does not exist
    finally:
        await conn.close()


async def test_failover_to_next_url(broker_url: str, exchange: str, free_port: int) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port}/"
    async with Publisher((dead, broker_url), exchange) as pub:
        pub.publish(report("f"))
        assert await pub.flush(10)
        assert pub.stats.confirmed == 1


async def test_foreign_client_reads_reports(broker_url: str, exchange: str, unique: str) -> None:
    """pika, knowing nothing of streamer, reads body and properties."""
    queue = f"streamer.test.pika.{unique}"
    params = pika.URLParameters(broker_url)
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.exchange_declare(exchange, exchange_type="topic", durable=True)
        ch.queue_declare(queue, auto_delete=True)
        ch.queue_bind(queue, exchange, routing_key="tasks.*")
        async with Publisher(broker_url, exchange, app_id="pulp") as pub:
            pub.publish(report("abc123", "running", items_done=3, items_total=10))
            assert await pub.flush(10)
        method, props, body = None, None, None
        for _ in range(50):
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is not None:
                break
            time.sleep(0.05)
        assert method is not None and props is not None and body is not None
        doc = json.loads(body)
        assert method.routing_key == "tasks.abc123"
        assert doc["task_id"] == "abc123" and doc["state"] == "running" and doc["seq"] == 1
        assert doc["progress_report"] == {"items_done": 3, "items_total": 10}
        assert abs(doc["sent_at"] - time.time()) < 60
        assert props.content_type == "application/json"
        assert props.delivery_mode == 1
        assert props.app_id == f"pulp@{socket.gethostname()}:{os.getpid()}"
        assert props.message_id
        assert props.correlation_id == "abc123"
        assert props.type == "running"
        assert props.timestamp and abs(props.timestamp - time.time()) < 60
        assert props.headers is None  # no header table unless asked for (broker CPU)
        ch.queue_delete(queue)
    finally:
        conn.close()


async def test_big_report_split_into_frames(
    broker_url: str,
    exchange: str,
    collector: Collector,
) -> None:
    async with Publisher(broker_url, exchange, max_body=1_000_000) as pub:
        pub.publish(report("big", blob="x" * 500_000))
        assert await pub.flush(10)
    received = await collector.wait_for(1)
    assert received[0][1]["progress_report"]["blob"] == "x" * 500_000


async def test_unclosed_publisher_warns(broker_url: str, exchange: str) -> None:
    pub = Publisher(broker_url, exchange)
    await pub.start()
    with pytest.warns(ResourceWarning, match="unclosed streamer publisher"):
        pub.__del__()
    await pub.close()
    gc.collect()


async def test_memory_flat_while_broker_down(free_port: int, exchange: str) -> None:
    """200,000 publishes over 1,000 tasks with no broker: traced memory stays flat."""
    import tracemalloc

    url = f"amqp://guest:guest@127.0.0.1:{free_port}/"
    async with Publisher(url, exchange, connect_timeout=0.2) as pub:
        reports = [report(f"m{t}", n=t) for t in range(1000)]
        for r in reports:  # first sight of every task: its sequence and frames are remembered
            pub.publish(r)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(200_000):
                pub.publish(reports[n % 1000])
                if n % 10_000 == 0:
                    await asyncio.sleep(0)
            growth = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert pub.stats.dropped == 201_000
        assert growth < 1_000_000, f"memory grew by {growth} bytes"


async def test_wrong_password_is_logged_masked_never_raised(
    broker_url: str,
    exchange: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(broker_url)
    secret = "not-the-password-4f9c"
    bad = urlunsplit(parts._replace(netloc=f"guest:{secret}@{parts.hostname}:{parts.port or 5672}"))
    async with Publisher(bad, exchange, connect_timeout=2) as pub:
        pub.publish(report("auth"))
        assert pub.stats.dropped_by_reason["disconnected"] == 1
        assert secret not in repr(pub) and secret not in str(pub.settings)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "ACCESS_REFUSED" in messages
    assert secret not in messages
    assert "guest:***@" in messages


async def test_header_table_when_asked(
    broker_url: str, exchange: str, collector: Collector
) -> None:
    async with Publisher(broker_url, exchange, headers=True) as pub:
        pub.publish(report("h1", "error"))
        assert await pub.flush(10)
    ((_, body, props),) = await collector.wait_for(1)
    assert props.headers == {
        "task_id": "h1",
        "state": "error",
        "seq": 1,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    assert body["seq"] == 1


async def test_many_publishes_per_socket_write(
    broker_url: str,
    exchange: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst of reports leaves in one write per connection, not one per report."""
    from streamer.amqp import Connection

    writes: list[int] = []
    original = Connection.write

    def counting(self: Connection, data: bytes) -> None:
        writes.append(len(data))
        original(self, data)

    monkeypatch.setattr(Connection, "write", counting)
    async with Publisher(broker_url, exchange, channels=4, confirm_window=1000) as pub:
        for n in range(1000):
            pub.publish(report(f"w{n}"))
        assert await pub.flush(10)
        assert pub.stats.confirmed == 1000
    assert len(writes) == 1, f"{len(writes)} writes for 1,000 reports"


async def test_no_coalescing_without_pressure(
    broker_url: str,
    exchange: str,
    collector: Collector,
) -> None:
    """Back-to-back reports of one task all go out while the confirm window has room."""
    async with Publisher(broker_url, exchange, confirm_window=500) as pub:
        for n in range(300):
            pub.publish(report("steady", n=n))
        pub.publish(report("steady", "finished"))
        assert await pub.flush(10)
        assert pub.stats.coalesced == 0
        assert pub.stats.confirmed == 301
    received = await collector.wait_for(301)
    assert [body["seq"] for _, body, _ in received] == list(range(1, 302))


async def test_a_report_due_earlier_counts_its_lateness(
    broker_url: str, exchange: str, collector: Collector
) -> None:
    """``due``: a report handed over 2 s after it was due carries the due time as sent_at
    and its confirm latency includes the 2 s (a load generator's intended-time latency),
    in both publishers; a bad ``due`` is refused by name."""
    due = time.time() - 2.0
    async with Publisher(broker_url, exchange) as pub:
        pub.publish(report("late-async"), due=due)
        pub.publish(report("on-time-async"))
        with pytest.raises(InvalidReport, match="due must be"):
            pub.publish(report("late-async"), due=float("nan"))
        assert await pub.flush(10)
        stats = pub.stats
    assert stats.confirmed == 2
    assert 2.0 <= stats.confirm_latency_max < 10
    assert stats.confirm_latency_p50 < 1.0  # the other one's latency starts when written
    with BackgroundPublisher(broker_url, exchange) as background:
        background.publish(report("late-thread"), due=due)
        with pytest.raises(InvalidReport, match="due must be"):
            background.publish(report("late-thread"), due="yesterday")  # type: ignore[arg-type]
        assert background.flush(10)
        assert 2.0 <= background.stats.confirm_latency_max < 10
    received = {body["task_id"]: body for _, body, _ in await collector.wait_for(3)}
    assert received["late-async"]["sent_at"] == due
    assert received["late-thread"]["sent_at"] == due
    assert abs(received["on-time-async"]["sent_at"] - time.time()) < 60
