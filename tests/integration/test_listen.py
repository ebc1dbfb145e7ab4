"""`streamer listen` as a subprocess against a real broker: Pulp's listen.py options and more."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from urllib.parse import urlsplit, urlunsplit

import pika

from streamer import Publisher, Report
from tests.helpers import start_streamer


class Listener:
    """``streamer listen`` in a subprocess; its stdout lines collected by a thread."""

    def __init__(self, broker_url: str, exchange: str, *args: str) -> None:
        env = {"STREAMER_URL": broker_url}
        self.proc = start_streamer("listen", "-e", exchange, *args, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    async def wait(self, timeout: float = 10) -> tuple[int, str]:
        """The exit code and stderr, once the process has ended by itself."""
        async with asyncio.timeout(timeout):
            while self.proc.poll() is None:
                await asyncio.sleep(0.02)
        self._reader.join(5)
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read()

    def close(self) -> None:
        """Kill the process if it still runs; close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


async def publish_until(
    pub: Publisher, reports: list[Report], listeners: list[Listener], timeout: float = 10
) -> None:
    """Publish ``reports`` again until every listener printed a line: each binds its queue at
    its own pace, and reports published before that are (by design) never delivered to it."""
    async with asyncio.timeout(timeout):
        while not all(listener.lines for listener in listeners):
            for report in reports:
                pub.publish(report)
            await asyncio.sleep(0.05)


def running(task_id: str) -> Report:
    return Report(task_id=task_id, state="running")


async def test_wildcards_and_quiet(broker_url: str, exchange: str) -> None:
    one_word = Listener(broker_url, exchange, "-q", "-s", "tasks.*", "--count", "1")
    any_words = Listener(broker_url, exchange, "-s", "tasks.#", "--count", "1")
    try:
        async with Publisher(broker_url, exchange) as pub:
            await publish_until(pub, [running("a")], [one_word, any_words])
        assert await one_word.wait() == (0, "")
        assert await any_words.wait() == (0, "")
    finally:
        one_word.close()
        any_words.close()
    assert one_word.lines == ["tasks.a"]  # -q: the routing key only
    key, _, body = any_words.lines[0].partition(" ")
    assert key == "tasks.a"
    assert json.loads(body)["task_id"] == "a"


async def test_task_sees_only_its_task_as_json(broker_url: str, exchange: str) -> None:
    listener = Listener(broker_url, exchange, "--task", "a", "--json", "--count", "3")
    try:
        async with Publisher(broker_url, exchange) as pub:
            # b's reports go first every round: had they been bound, they would show first.
            await publish_until(pub, [running("b"), running("a")], [listener])
            for _ in range(3):
                pub.publish(running("b"))
                pub.publish(running("a"))
            code, _ = await listener.wait()
    finally:
        listener.close()
    assert code == 0
    assert len(listener.lines) == 3  # --count 3, then a clean exit
    objects = [json.loads(line) for line in listener.lines]
    assert {o["routing_key"] for o in objects} == {"tasks.a"}
    assert {o["report"]["task_id"] for o in objects} == {"a"}
    assert objects[0]["report"]["state"] == "running"
    assert all(isinstance(o["report"]["seq"], int) for o in objects)


async def test_timeout_exits_0(broker_url: str, exchange: str) -> None:
    listener = Listener(broker_url, exchange, "--timeout", "1")
    try:
        assert await listener.wait() == (0, "")
    finally:
        listener.close()
    assert listener.lines == []


async def test_malformed_is_skipped_counted_and_sigterm_exits_0(
    broker_url: str, exchange: str
) -> None:
    listener = Listener(broker_url, exchange, "-q")
    try:
        async with Publisher(broker_url, exchange) as pub:
            await publish_until(pub, [running("a")], [listener])
            conn = pika.BlockingConnection(pika.URLParameters(broker_url))
            try:
                channel = conn.channel()
                channel.confirm_delivery()  # enqueued before the report that follows
                channel.basic_publish(exchange, "tasks.junk", b"not json at all")
            finally:
                conn.close()
            pub.publish(running("after-junk"))
            async with asyncio.timeout(10):
                while "tasks.after-junk" not in listener.lines:
                    await asyncio.sleep(0.02)
        listener.proc.send_signal(signal.SIGTERM)
        code, stderr = await listener.wait()
    finally:
        listener.close()
    assert code == 0
    assert "tasks.junk" not in listener.lines
    summary = [line for line in stderr.splitlines() if line.startswith("listen: skipped")]
    assert summary == ["listen: skipped 1 malformed message (not_json: 1)"]


async def test_address_and_port_replace_the_url_host(broker_url: str, exchange: str) -> None:
    parts = urlsplit(broker_url)
    userinfo = parts.netloc.rpartition("@")[0]
    unreachable = urlunsplit(parts._replace(netloc=f"{userinfo}@nohost.invalid:1"))
    port = str(parts.port or 5672)
    listener = Listener(unreachable, exchange, "-a", "127.0.0.1", "-p", port, "-q", "--count", "1")
    try:
        async with Publisher(broker_url, exchange) as pub:
            await publish_until(pub, [running("a")], [listener])
        assert await listener.wait() == (0, "")
    finally:
        listener.close()
    assert listener.lines == ["tasks.a"]


async def test_bad_task_id_is_a_one_line_usage_error(broker_url: str, exchange: str) -> None:
    listener = Listener(broker_url, exchange, "--task", "a.b")
    try:
        code, stderr = await listener.wait()
    finally:
        listener.close()
    assert code == 2
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith("streamer: usage error: --task: ")
    assert listener.lines == []
