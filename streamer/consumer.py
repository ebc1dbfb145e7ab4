"""Receiving side: subscribe to task reports with AMQP topic bindings.

Consumers are not on the hot path, so they use aiormq as it is. A subscription owns an
exclusive, auto-deleted queue with a length cap: a slow listener never makes the broker hoard
messages for it (the oldest are dropped by the broker instead), and nothing is left behind
when it goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiormq
import aiormq.abc
import msgspec

from .settings import Settings

__all__ = ["Delivery", "Subscription"]


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One message as received: routing key, raw body and AMQP properties."""

    routing_key: str
    body: bytes
    properties: Any
    exchange: str


class Subscription:
    """An exclusive, length-capped queue bound to the exchange, read as an async iterator.

    ``async with Subscription(settings, ["tasks.#"]) as sub`` returns once the queue is bound,
    so nothing published afterwards is missed; ``async for delivery in sub`` then yields
    messages (acked as they are yielded).

    Args:
        bindings: binding keys; ``*`` matches one word, ``#`` any number of words.
        max_length: queue length cap; beyond it the broker drops the oldest messages.
        prefetch: unacknowledged deliveries in flight.
    """

    def __init__(
        self,
        settings: Settings,
        bindings: Sequence[str] = ("tasks.#",),
        *,
        max_length: int = 10_000,
        prefetch: int = 500,
    ) -> None:
        self.settings = settings
        self.bindings = list(bindings)
        self.max_length = max_length
        self.prefetch = prefetch
        self._conn: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._inbox: asyncio.Queue[aiormq.abc.DeliveredMessage] = asyncio.Queue()

    async def __aenter__(self) -> Subscription:
        settings = self.settings
        self._conn = await aiormq.connect(
            settings.urls[0],
            client_properties={"connection_name": f"{settings.client_name} listener"},
        )
        try:
            channel = self._channel = await self._conn.channel()
            await channel.basic_qos(prefetch_count=self.prefetch)
            if not settings.exchange.startswith("amq."):
                await channel.exchange_declare(
                    settings.exchange, exchange_type="topic", durable=True
                )
            queue = await channel.queue_declare(
                "",
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-length": self.max_length, "x-overflow": "drop-head"},
            )
            assert queue.queue is not None
            for key in self.bindings:
                await channel.queue_bind(queue.queue, settings.exchange, routing_key=key)
            await channel.basic_consume(queue.queue, self._deliver)
        except BaseException:
            await self._conn.close()
            raise
        return self

    async def _deliver(self, message: aiormq.abc.DeliveredMessage) -> None:
        self._inbox.put_nowait(message)

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        assert self._channel is not None, "use `async with Subscription(...)` first"
        while True:
            message = await self._inbox.get()
            yield Delivery(
                routing_key=message.routing_key or "",
                body=message.body,
                properties=message.header.properties,
                exchange=message.exchange or "",
            )
            await self._channel.basic_ack(message.delivery_tag or 0)
