"""Integration fixtures: a consumer queue bound to the test's exchange, a proxy, a Celery
queue, and what the broker says of connections. (Markers, uvloop, ``exchange`` and the other
shared fixtures are in tests/conftest.py; helpers for the ``streamer`` command in
tests/helpers.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiormq
import pytest

from streamer.settings import DEFAULT_URL
from tests.broker import node_for_url
from tests.helpers import delete_from_broker
from tests.proxy import Proxy


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


@pytest.fixture
async def celery_queue(broker_url: str, unique: str) -> AsyncIterator[str]:
    """A Celery queue name of our own, also used as the worker's control exchange.

    Deleted afterwards, messages and all: the queue, its same-named direct exchange (Celery
    declares one per ``-Q`` queue) and the ``<name>.pidbox`` fanout exchange of remote
    control (Celery's default, ``celery.pidbox``, is shared by every worker on the broker).
    """
    name = f"streamer.test.celery.{unique}"
    yield name
    exchanges = (name, f"{name}.pidbox", f"reply.{name}.pidbox")
    await delete_from_broker(broker_url, queues=(name,), exchanges=exchanges)
