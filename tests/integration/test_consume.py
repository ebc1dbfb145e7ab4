"""consume(): fedora-messaging semantics, malformed messages, reconnect after a broker restart,
and the ``streamer consume`` command, against a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiormq
import pika
import pytest

from streamer.consumer import COUNTERS, Consumer, Message, consume, subscribe
from streamer.errors import CallbackError, Drop, HaltConsumer, Nack
from streamer.report import Report, encode
from streamer.settings import Settings
from tests.broker import PrivateNode
from tests.helpers import start_streamer
from tests.proxy import Proxy

ROOT = Path(__file__).resolve().parents[2]


def settings_for(url: str, exchange: str, **extra: Any) -> Settings:
    return Settings(url=url, exchange=exchange, reconnect_min=0.05, reconnect_max=0.5, **extra)


async def publish(url: str, exchange: str, *reports: Report) -> None:
    """Publish reports as streamer does (JSON, content type), one connection, confirmed."""
    conn = await aiormq.connect(url)
    try:
        channel = await conn.channel()
        await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        for seq, report in enumerate(reports, 1):
            body = encode(Report(**{**_fields(report), "seq": seq}))
            await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=f"tasks.{report.task_id}",
                properties=aiormq.spec.Basic.Properties(content_type="application/json"),
            )
    finally:
        await conn.close()


def _fields(report: Report) -> dict[str, Any]:
    return {name: getattr(report, name) for name in report.__struct_fields__}


def report(task_id: str, state: str = "running") -> Report:
    return Report(task_id=task_id, state=state)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(consumer: Consumer) -> AsyncIterator[asyncio.Future[int]]:
    """Run the consumer in the background; yield once it consumes; stop it on the way out."""
    task = asyncio.ensure_future(consumer.run())
    waiting = asyncio.ensure_future(consumer.consuming.wait())
    await asyncio.wait({task, waiting}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()
    assert consumer.consuming.is_set(), "consumer did not start within 10 s"
    try:
        yield task
    finally:
        consumer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_ack_and_message_fields(broker_url: str, exchange: str) -> None:
    seen: list[Message] = []
    consumer = Consumer(seen.append, settings=settings_for(broker_url, exchange))
    async with running(consumer):
        await publish(broker_url, exchange, report("t1"), report("t1", "finished"))
        await until(lambda: len(seen) == 2)
        await until(lambda: consumer.counters["acked"] == 2)
    first = seen[0]
    assert first.routing_key == "tasks.t1"
    assert first.exchange == exchange
    assert first.queue.startswith("amq.gen-")
    assert first.report.task_id == "t1" and first.report.seq == 1
    assert first.properties.content_type == "application/json"
    assert first.headers == {} and first.topic == "tasks.t1"
    assert json.loads(first.body)["state"] == "running"
    assert not first.redelivered and first.delivery_tag > 0
    assert [m.report.state for m in seen] == ["running", "finished"]
    assert set(consumer.counters) == set(COUNTERS)
    assert consumer.counters["delivered"] == 2 and consumer.counters["failed"] == 0


async def test_nack_requeues_and_redelivers(broker_url: str, exchange: str) -> None:
    seen: list[Message] = []

    def callback(message: Message) -> None:
        seen.append(message)
        if len(seen) == 1:
            raise Nack()

    consumer = Consumer(callback, settings=settings_for(broker_url, exchange))
    async with running(consumer):
        await publish(broker_url, exchange, report("n1"))
        await until(lambda: len(seen) == 2)
        await until(lambda: consumer.counters["acked"] == 1)
    assert [m.report.task_id for m in seen] == ["n1", "n1"]
    assert seen[1].redelivered
    assert consumer.counters["nacked"] == 1


async def test_drop_rejects_without_redelivery(broker_url: str, exchange: str) -> None:
    seen: list[str] = []

    async def callback(message: Message) -> None:  # async callbacks are awaited
        seen.append(message.report.task_id)
        if message.report.task_id == "unwanted":
            raise Drop()

    consumer = Consumer(callback, settings=settings_for(broker_url, exchange))
    async with running(consumer):
        await publish(broker_url, exchange, report("unwanted"), report("next"))
        await until(lambda: "next" in seen)
        await asyncio.sleep(0.3)  # a redelivery would come now
    assert seen == ["unwanted", "next"]
    assert consumer.counters["dropped"] == 1 and consumer.counters["acked"] == 1


async def test_other_exception_rejects_logs_and_goes_on(
    broker_url: str, exchange: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def callback(message: Message) -> None:
        seen.append(message.report.task_id)
        if message.report.task_id == "poison":
            raise RuntimeError("cannot handle this one")

    consumer = Consumer(callback, settings=settings_for(broker_url, exchange))
    with caplog.at_level(logging.ERROR, logger="streamer.consumer"):
        async with running(consumer):
            await publish(broker_url, exchange, report("poison"), report("healthy"))
            await until(lambda: "healthy" in seen)
            await asyncio.sleep(0.3)
    assert seen == ["poison", "healthy"]  # not requeued: no loop
    assert consumer.counters["failed"] == 1 and consumer.counters["acked"] == 1
    failures = [r for r in caplog.records if "callback failed on tasks.poison" in r.getMessage()]
    assert failures and failures[0].exc_info is not None


async def test_halt_consumer_returns_its_exit_code(broker_url: str, exchange: str) -> None:
    seen: list[str] = []

    class Stopper:
        """A class callback: instantiated once, keeps state."""

        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, message: Message) -> None:
            self.calls += 1
            seen.append(message.report.task_id)
            if message.report.state == "finished":
                raise HaltConsumer(exit_code=3, reason="saw the end")

    settings = settings_for(broker_url, exchange)
    consuming = asyncio.ensure_future(consume(Stopper, settings=settings, prefetch=1))
    # consume() has no "ready" signal: keep publishing until the consumer has seen one
    async with asyncio.timeout(10):
        while not seen:
            await publish(broker_url, exchange, report("warmup"))
            await asyncio.sleep(0.1)
        await publish(broker_url, exchange, report("h1", "finished"), report("after"))
        assert await consuming == 3
    assert seen[-1] == "h1" and "after" not in seen


async def test_halt_on_error_raises_callback_error(broker_url: str, exchange: str) -> None:
    def callback(message: Message) -> None:
        raise KeyError(message.report.task_id)

    consumer = Consumer(callback, settings=settings_for(broker_url, exchange), halt_on_error=True)
    async with running(consumer) as task:
        await publish(broker_url, exchange, report("boom"))
        with pytest.raises(CallbackError) as info:
            await asyncio.wait_for(task, 10)
    assert isinstance(info.value.__cause__, KeyError)
    assert consumer.counters["failed"] == 1


async def test_malformed_messages_are_counted_and_never_reach_the_callback(
    broker_url: str, exchange: str
) -> None:
    seen: list[str] = []
    settings = settings_for(broker_url, exchange, max_body=4096)
    consumer = Consumer(lambda m: seen.append(m.report.task_id), settings=settings)
    good = encode(report("good"))
    bad = [
        (b"this is not json", "application/json"),
        (good, "text/plain"),
        (b'{"task_id": "\xff\xfe", "state": "running"}', "application/json"),
        (b'{"hello": "world"}', "application/json"),
        (b'{"task_id": "x", "state": "exploded"}', None),
        (b" " * 5000 + good, "application/json"),
    ]

    def inject() -> None:
        params = pika.URLParameters(broker_url)
        with contextlib.closing(pika.BlockingConnection(params)) as conn:
            channel = conn.channel()
            for body, content_type in [*bad, *bad, (good, "application/json")]:
                props = pika.BasicProperties(content_type=content_type)
                channel.basic_publish(exchange, "tasks.bad", body, props)

    async with running(consumer):
        await asyncio.to_thread(inject)
        await until(lambda: seen == ["good"])
        await until(lambda: consumer.counters["acked"] == 1)
        assert consumer.consuming.is_set()
    counters = consumer.counters
    assert counters["not_json"] == 2
    assert counters["content_type"] == 2
    assert counters["not_utf8"] == 2
    assert counters["not_a_report"] == 4
    assert counters["too_large"] == 2
    assert counters["delivered"] == 1 and counters["failed"] == 0


async def test_subscribe_yields_messages_and_acks_them(broker_url: str, exchange: str) -> None:
    settings = settings_for(broker_url, exchange)
    got: list[str] = []

    async def reader() -> None:
        async with contextlib.aclosing(subscribe(settings=settings)) as messages:
            async for message in messages:
                got.append(message.report.task_id)
                if message.report.task_id == "s3":
                    break

    reading = asyncio.ensure_future(reader())
    async with asyncio.timeout(10):
        while not got:  # the queue exists once the first warm-up message arrives
            await publish(broker_url, exchange, report("s0"))
            await asyncio.sleep(0.1)
        await publish(broker_url, exchange, report("s1"), report("s2"), report("s3"))
        await reading
    assert got[-3:] == ["s1", "s2", "s3"]
    assert set(got[:-3]) == {"s0"}


async def test_sync_callback_longer_than_heartbeats(broker_url: str, exchange: str) -> None:
    """A blocking callback runs in a thread: heartbeats (1 s) flow while it sleeps 2.5 s."""
    seen: list[str] = []

    def slow(message: Message) -> None:
        if message.report.task_id == "slow":
            time.sleep(2.5)
        seen.append(message.report.task_id)

    consumer = Consumer(slow, settings=settings_for(broker_url, exchange, heartbeat=1))
    async with running(consumer):
        await publish(broker_url, exchange, report("slow"), report("quick"))
        await until(lambda: seen == ["slow", "quick"])
        await until(lambda: consumer.counters["acked"] == 2)
    assert consumer.counters["reconnects"] == 0


@pytest.fixture(scope="module")
def node() -> Iterator[PrivateNode]:
    with PrivateNode(prefix="streamer-consume") as n:
        yield n


async def test_resumes_after_broker_restart(node: PrivateNode, unique: str) -> None:
    exchange = f"streamer.test.{unique}"
    seen: list[str] = []
    consumer = Consumer(
        lambda m: seen.append(m.report.task_id), settings=settings_for(node.url, exchange)
    )
    async with running(consumer):
        await publish(node.url, exchange, report("before"))
        await until(lambda: "before" in seen)
        await asyncio.to_thread(node.restart)
        restarted = time.monotonic()
        async with asyncio.timeout(10):  # resume with no manual action
            while "after" not in seen:
                with contextlib.suppress(OSError, aiormq.exceptions.AMQPError):
                    await publish(node.url, exchange, report("after"))
                await asyncio.sleep(0.2)
        resumed = time.monotonic() - restarted
        assert consumer.consuming.is_set()
    assert consumer.counters["reconnects"] >= 1
    assert resumed < 10


async def test_resumes_after_the_connection_drops(
    broker_url: str, exchange: str, proxy: Proxy
) -> None:
    seen: list[str] = []
    consumer = Consumer(
        lambda m: seen.append(m.report.task_id), settings=settings_for(proxy.url, exchange)
    )
    async with running(consumer):
        await publish(broker_url, exchange, report("before"))
        await until(lambda: "before" in seen)
        await proxy.reset()
        async with asyncio.timeout(10):
            while "after" not in seen:
                await publish(broker_url, exchange, report("after"))
                await asyncio.sleep(0.2)
    assert consumer.counters["reconnects"] >= 1


async def test_half_open_link_is_noticed_by_heartbeats(
    broker_url: str, exchange: str, proxy: Proxy
) -> None:
    """Nothing gets through but the socket stays open: missed heartbeats end it."""
    seen: list[str] = []
    settings = settings_for(proxy.url, exchange, heartbeat=1)
    consumer = Consumer(lambda m: seen.append(m.report.task_id), settings=settings)
    async with running(consumer):
        proxy.blackhole = True
        await until(lambda: not consumer.consuming.is_set(), timeout=15)
        proxy.blackhole = False
        async with asyncio.timeout(10):
            while "after" not in seen:
                await publish(broker_url, exchange, report("after"))
                await asyncio.sleep(0.2)
    assert consumer.counters["reconnects"] >= 1


async def test_resumes_after_its_queue_is_deleted(
    broker_url: str, exchange: str, unique: str
) -> None:
    """The broker cancels the consumer but keeps the connection: still no getting stuck."""
    queue = f"streamer-test-consume-{unique}"
    seen: list[str] = []
    consumer = Consumer(
        lambda m: seen.append(m.report.task_id),
        bindings=[{"exchange": exchange, "queue": queue, "routing_keys": ["tasks.#"]}],
        queues={queue: {"durable": False, "auto_delete": False, "exclusive": False}},
        settings=settings_for(broker_url, exchange),
    )
    try:
        async with running(consumer):
            await publish(broker_url, exchange, report("before"))
            await until(lambda: "before" in seen)
            conn = await aiormq.connect(broker_url)
            try:
                await (await conn.channel()).queue_delete(queue)
            finally:
                await conn.close()
            async with asyncio.timeout(10):
                while "after" not in seen:
                    await publish(broker_url, exchange, report("after"))
                    await asyncio.sleep(0.2)
        assert consumer.counters["reconnects"] >= 1
    finally:
        conn = await aiormq.connect(broker_url)
        try:
            await (await conn.channel()).queue_delete(queue)
        finally:
            await conn.close()


# ------------------------------------------------------------------------- the command line

CALLBACK_MODULE = """
import sys
from streamer.errors import HaltConsumer

class Printer:
    def __init__(self):
        self.count = 0

    def __call__(self, message):
        self.count += 1
        print(message.routing_key, message.report.state, flush=True)
        if message.report.state == "finished":
            raise HaltConsumer(exit_code=4, reason=f"finished after {self.count}")
"""


def _cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    (tmp_path / "my_callbacks.py").write_text(textwrap.dedent(CALLBACK_MODULE))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return start_streamer("consume", *args, env=env)


def _reap(proc: subprocess.Popen[str]) -> None:
    """Kill the command if it still runs and close its pipes (no ResourceWarning)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


async def _wait_consuming(proc: subprocess.Popen[str]) -> list[str]:
    """Read stderr until the consumer says it consumes; return what it printed."""
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(15):
        while True:
            line = await asyncio.to_thread(proc.stderr.readline)
            if not line:
                pytest.fail(f"consumer exited early: {''.join(lines)}")
            lines.append(line)
            if "consuming on" in line:
                return lines


async def test_cli_consume_with_config_tables_and_halt(
    broker_url: str, exchange: str, tmp_path: Path
) -> None:
    config = tmp_path / "consumer.toml"
    config.write_text(
        textwrap.dedent(f"""
        url = "{broker_url}"
        exchange = "{exchange}"
        heartbeat = 10

        [[bindings]]
        queue = "streamer-test-{exchange}"
        exchange = "{exchange}"
        routing_keys = ["tasks.wanted"]

        [queues."streamer-test-{exchange}"]
        durable = false
        auto_delete = true
        exclusive = true
        arguments = {{ "x-max-length" = 100 }}

        [qos]
        prefetch_count = 5
        """)
    )
    proc = _cli(tmp_path, "-v", "--callback", "my_callbacks:Printer", "--config", str(config))
    try:
        await _wait_consuming(proc)
        await publish(
            broker_url, exchange, report("other"), report("wanted"), report("wanted", "finished")
        )
        out, err = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        _reap(proc)
    assert proc.returncode == 4, err
    assert out.splitlines() == ["tasks.wanted running", "tasks.wanted finished"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cli_signal_exits_cleanly(
    broker_url: str, exchange: str, tmp_path: Path, sig: signal.Signals
) -> None:
    proc = _cli(
        tmp_path, "-v", "--callback", "my_callbacks:Printer", "--url", broker_url, "-e", exchange
    )
    try:
        await _wait_consuming(proc)
        proc.send_signal(sig)
        _, err = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        _reap(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("callback", "says"),
    [
        ("no_such_module_xyz:thing", "cannot import callback module"),
        ("my_callbacks:missing", "has no attribute"),
        ("my_callbacks:sys", "not callable"),
        ("my_callbacks", "must look like"),
    ],
)
def test_cli_bad_callback_is_one_line_exit_2(
    broker_url: str, tmp_path: Path, callback: str, says: str
) -> None:
    proc = _cli(tmp_path, "--callback", callback, "--url", broker_url)
    _, err = proc.communicate(timeout=30)
    err_lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2, err
    assert len(err_lines) == 1 and says in err_lines[0], err


@pytest.mark.parametrize(
    ("binding", "expected"),
    [
        ("tasks.*", ["tasks.a", "tasks.b"]),
        ("tasks.#", ["tasks.a", "tasks.b", "tasks.a.sub"]),
        ("tasks.a", ["tasks.a"]),
    ],
)
async def test_wildcard_bindings(
    broker_url: str, exchange: str, binding: str, expected: list[str]
) -> None:
    """Topic semantics: `*` is one word, `#` any number, a plain key one task."""
    seen: list[str] = []
    consumer = Consumer(
        lambda m: seen.append(m.routing_key),
        bindings={"routing_keys": [binding]},
        settings=settings_for(broker_url, exchange),
    )
    async with running(consumer):
        conn = await aiormq.connect(broker_url)
        try:
            channel = await conn.channel()
            await channel.confirm_delivery()
            for key in ("tasks.a", "tasks.b", "tasks.a.sub", "other.a"):
                body = encode(Report(task_id=key.split(".")[-1], state="running"))
                await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=key,
                    properties=aiormq.spec.Basic.Properties(content_type="application/json"),
                )
            await channel.basic_publish(
                encode(report("end")), exchange=exchange, routing_key="tasks.end.marker"
            )
        finally:
            await conn.close()
        if binding == "tasks.#":
            await until(lambda: "tasks.end.marker" in seen)
            seen.remove("tasks.end.marker")
        else:
            await until(lambda: len(seen) >= len(expected))
            await asyncio.sleep(0.3)  # anything that should not arrive would have by now
    assert sorted(seen) == sorted(expected)
