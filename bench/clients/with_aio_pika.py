"""aio-pika, the asyncio client most projects reach for: once awaiting every publish, once
with a window of publishes in flight. Named ``with_aio_pika`` so it cannot shadow the library."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._common import CONTENT_TYPE, TRANSIENT, Message, OneAtATime, RunOptions, _run_async, pipelined


def run_aio_pika_await(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """aio-pika, one ``await exchange.publish()`` at a time: a round-trip per message."""
    import aio_pika
    from aio_pika.exceptions import DeliveryError

    async def main() -> dict[str, Any]:
        loop = OneAtATime(messages, opts)
        async with await aio_pika.connect(url) as conn:
            channel = await conn.channel(publisher_confirms=True)
            ex = await channel.get_exchange(exchange, ensure=False)
            for rk, body in loop:
                msg = aio_pika.Message(body, content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)
                try:
                    await ex.publish(msg, rk, mandatory=False)
                    loop.confirmed += 1
                except DeliveryError:
                    loop.nacked += 1
        return loop.summary()

    return _run_async(main())


def run_aio_pika_pipelined(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """aio-pika with up to ``window`` publishes awaiting their confirm."""
    import aio_pika
    from aio_pika.exceptions import DeliveryError

    async def main() -> dict[str, Any]:
        async with await aio_pika.connect(url) as conn:
            channel = await conn.channel(publisher_confirms=True)
            ex = await channel.get_exchange(exchange, ensure=False)

            def publish(rk: str, body: bytes) -> Any:
                msg = aio_pika.Message(body, content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)
                return ex.publish(msg, rk, mandatory=False)

            return await pipelined(publish, (DeliveryError,), messages, opts)

    return _run_async(main())
