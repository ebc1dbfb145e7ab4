"""aiormq, the low-level asyncio AMQP client under aio-pika (and under streamer's connection),
at its fastest. Named ``with_aiormq`` so it cannot shadow the library."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._common import CONTENT_TYPE, TRANSIENT, Message, RunOptions, _run_async, pipelined


def run_aiormq_pipelined(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """Raw aiormq ``basic_publish`` with up to ``window`` unconfirmed.

    ``wait=False`` skips aiormq's per-message drain future, which the default
    (``wait=True``) awaits while holding the channel lock; the confirm is still
    awaited per message. It measured ~5% faster here, so this is aiormq's best.
    """
    import aiormq
    from aiormq.exceptions import DeliveryError
    from pamqp.commands import Basic

    async def main() -> dict[str, Any]:
        async with aiormq.connect(url) as conn:
            channel = await conn.channel(publisher_confirms=True)

            def publish(rk: str, body: bytes) -> Any:
                # A fresh Properties per message: aiormq writes a message_id into it.
                props = Basic.Properties(content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)
                return channel.basic_publish(
                    body, exchange=exchange, routing_key=rk, properties=props, wait=False
                )

            return await pipelined(publish, (DeliveryError,), messages, opts)

    return _run_async(main())
