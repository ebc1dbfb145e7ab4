"""pika's BlockingConnection, the classic synchronous client: the slow baseline.
Named ``with_pika`` so it cannot shadow the library."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._common import CONTENT_TYPE, TRANSIENT, Message, OneAtATime, RunOptions


def run_pika(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """pika BlockingConnection + confirm_delivery(): each publish waits for its ack.

    The slow baseline, so it stops after ``opts.time_cap`` seconds and the rate
    is over what it managed.
    """
    import pika
    from pika.exceptions import NackError

    loop = OneAtATime(messages, opts)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        props = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)
        publish = channel.basic_publish
        for rk, body in loop:
            try:
                publish(exchange, rk, body, props, mandatory=False)
                loop.confirmed += 1
            except NackError:
                loop.nacked += 1
    finally:
        conn.close()
    return loop.summary()
