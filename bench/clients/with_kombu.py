"""kombu on py-amqp, the stack Celery publishes with. Named ``with_kombu`` so it cannot shadow
the library."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._common import CONTENT_TYPE, TRANSIENT, Message, OneAtATime, RunOptions


def run_kombu(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """kombu Producer on py-amqp with ``confirm_publish``: one round-trip per message."""
    from amqp.exceptions import MessageNacked
    from kombu import Connection, Exchange, Producer

    loop = OneAtATime(messages, opts)
    # kombu maps amqp:// (and amqps://) to its py-amqp transport.
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        conn.connect()
        ex = Exchange(exchange, type="topic", durable=False, auto_delete=False)
        producer = Producer(conn.channel(), exchange=ex, auto_declare=False)
        publish = producer.publish
        for rk, body in loop:
            try:
                publish(
                    body,
                    routing_key=rk,
                    content_type=CONTENT_TYPE,
                    content_encoding="utf-8",
                    delivery_mode=TRANSIENT,
                    retry=False,
                )
                loop.confirmed += 1
            except MessageNacked:
                loop.nacked += 1
    return loop.summary()
