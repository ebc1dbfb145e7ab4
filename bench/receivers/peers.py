"""The peers: how a project would read the same reports with aio-pika or pika, each the way
its documentation shows, in its own child of bench/receive.py.

Both default to no acknowledgements, like the streamer tools (a viewer only displays):
aio-pika as in its "Hello World" tutorial (``await queue.consume(on_message, no_ack=True)``),
pika as in its tutorial (``basic_consume(..., auto_ack=True)`` on a ``BlockingConnection``),
each with ``prefetch_count=1000`` set as their docs show (with no_ack the broker ignores it: it
pushes as fast as the socket takes, exactly as it does for the streamer tools). The ``-ack``
variants acknowledge every message as the docs' worker examples do (aio-pika ``async with
message.process()``, pika ``basic_ack`` per delivery), prefetch 1000.

Per report they decode only ``task_id`` and ``seq`` (msgspec) to count gaps: less than the
streamer tools do with a report, so they are the libraries' cost plus a small fold.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from .broker import BINDING_KEY, CAPPED
from .children import TICK, Status


def run_aio_pika(spec: dict[str, Any], status: Status, *, ack: bool = False) -> None:
    """aio-pika ``queue.consume(callback)``: no_ack, or ``message.process()`` with ``ack``."""
    import aio_pika
    import uvloop

    body, seen = status.body, status.seen

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        connection = await aio_pika.connect(spec["url"])
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=spec["prefetch"])
            if spec.get("queue"):
                queue = await channel.get_queue(spec["queue"], ensure=False)
            else:
                queue = await channel.declare_queue(
                    exclusive=True, auto_delete=True, arguments=CAPPED
                )
                await queue.bind(spec["exchange"], BINDING_KEY)

            if ack:

                async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                    async with message.process():
                        body(message.body)
                        seen(1)

            else:

                async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                    body(message.body)
                    seen(1)

            await queue.consume(on_message, no_ack=not ack)
            while not stop.is_set():
                if not status.done:
                    status.write()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TICK)

    uvloop.run(main())


def run_pika(spec: dict[str, Any], status: Status, *, ack: bool = False) -> None:
    """pika ``BlockingConnection`` + ``basic_consume``: auto_ack, or ``basic_ack`` with ``ack``."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(spec["url"]))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=spec["prefetch"])
    queue = spec.get("queue")
    if not queue:
        queue = channel.queue_declare(
            "", exclusive=True, auto_delete=True, arguments=CAPPED
        ).method.queue
        channel.queue_bind(queue, spec["exchange"], routing_key=BINDING_KEY)
    body, seen = status.body, status.seen
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    if ack:

        def on_message(ch: Any, method: Any, properties: Any, data: bytes) -> None:
            body(data)
            seen(1)
            ch.basic_ack(delivery_tag=method.delivery_tag)

    else:

        def on_message(ch: Any, method: Any, properties: Any, data: bytes) -> None:
            body(data)
            seen(1)

    def tick() -> None:
        if stopping:
            channel.stop_consuming()
            return
        if not status.done:
            status.write()
        connection.call_later(TICK, tick)

    channel.basic_consume(queue, on_message, auto_ack=not ack)
    connection.call_later(TICK, tick)
    try:
        channel.start_consuming()
    finally:
        connection.close()
