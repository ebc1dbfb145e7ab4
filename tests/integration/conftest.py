"""Integration fixtures: uvloop, a consumer queue bound to a fresh exchange, a proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import pytest
import uvloop

from streamer.settings import DEFAULT_URL
from tests.broker import node_for_url
from tests.proxy import Proxy


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """The integration suite runs under uvloop, like the CLI and the background publisher."""
    return {"uvloop": uvloop.new_event_loop}


class Collector:
    """A plain aiormq consumer on an exclusive queue bound ``tasks.#`` to one exchange."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], Any]] = []
        self._changed = asyncio.Event()

    def on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        self.messages.append(
            (message.routing_key or "", json.loads(message.body), message.header.properties)
        )
        self._changed.set()

    async def wait_for(
        self, count: int, timeout: float = 20
    ) -> list[tuple[str, dict[str, Any], Any]]:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages

    def reports(self) -> list[dict[str, Any]]:
        return [body for _, body, _ in self.messages]


@pytest.fixture
async def exchange(broker_url: str, unique: str) -> AsyncIterator[str]:
    """A fresh topic exchange name; deleted after the test."""
    name = f"streamer.test.{unique}"
    yield name
    conn = await aiormq.connect(broker_url)
    try:
        channel = await conn.channel()
        await channel.exchange_delete(name)
    finally:
        await conn.close()


@pytest.fixture
async def collector(broker_url: str, exchange: str) -> AsyncIterator[Collector]:
    """Consume everything published to ``exchange`` (declared here so binding works)."""
    conn = await aiormq.connect(broker_url)
    channel = await conn.channel()
    await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    queue = await channel.queue_declare("", exclusive=True, auto_delete=True)
    await channel.queue_bind(queue.queue, exchange, routing_key="tasks.#")
    col = Collector()
    await channel.basic_consume(queue.queue, col.on_message, no_ack=True)
    yield col
    await conn.close()


@pytest.fixture
async def proxy(broker_url: str) -> AsyncIterator[Proxy]:
    async with Proxy(broker_url) as p:
        yield p


def broker_connections(connection_name: str) -> list[dict[str, Any]]:
    """The broker's view of connections named ``connection_name`` (via rabbitmqctl).

    The node is ``$TEST_RABBITMQ_NODE``, else the private node ``make test`` started for the
    broker under test, else rabbitmqctl's default (the local broker).
    """
    cmd = [
        "rabbitmqctl",
        "list_connections",
        "client_properties",
        "channels",
        "--formatter",
        "json",
        "-q",
    ]
    url = os.environ.get("STREAMER_URL") or DEFAULT_URL
    node = os.environ.get("TEST_RABBITMQ_NODE") or node_for_url(url)
    if node:
        cmd[1:1] = ["-n", node]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    found = []
    for conn in json.loads(out or "[]"):
        props = {name: value for name, _, value in conn["client_properties"]}
        if props.get("connection_name") == connection_name:
            found.append({"channels": conn["channels"], **props})
    return found


STREAMER = str(Path(sys.executable).with_name("streamer"))


def clean_env() -> dict[str, str]:
    """This process's environment without STREAMER_* settings (commands get flags only)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}


@contextlib.asynccontextmanager
async def dashboard_command(
    broker_url: str, exchange: str, port: int, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``streamer dashboard`` as a process; yields it and its first stderr line, then stops it
    with SIGTERM (its exit code is left for the test to check)."""
    proc = await asyncio.create_subprocess_exec(
        STREAMER,
        "dashboard",
        "--url",
        broker_url,
        "-e",
        exchange,
        "--port",
        str(port),
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**clean_env(), **(env or {})},
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(15):
            line = (await proc.stderr.readline()).decode()
        yield proc, line
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                await proc.wait()


async def wait_healthy(http: aiohttp.ClientSession, url: str, timeout: float = 15) -> None:
    """Wait until the dashboard at ``url`` (ending in ``/``) answers ``/healthz`` with 200."""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
