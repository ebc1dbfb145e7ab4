"""The parent's own view of the broker in bench/receive.py: fresh exchanges, the readiness
probe, and the gated queue the drain rounds fill. No receiver ever uses this connection.

Why a probe: a receiver started as a process (``streamer watch``, ``listen``) gives no sign
that its queue is bound, and a report published before that would be lost and counted against
it. So the parent publishes one probe report (task ``bench-probe``, seq 1) with ``mandatory``
until the broker stops returning it: the first one routed is in the receiver's queue, every
earlier one was unroutable and went nowhere. Each receiver therefore gets exactly one probe,
which the parent subtracts.

Why a gate: a drain must start when the receiver is already connected and idle (imports,
login and declares done), or its start-up would be timed as draining. The drain queue is
declared with ``x-single-active-consumer``; the parent registers first, holding one sentinel
message unacknowledged (prefetch 1), so the receiver's consumer waits inactive behind it while
the queue is filled. Closing the parent's channel (after cancel and ack) hands the queue to the
receiver at a moment the parent knows. (On RabbitMQ 3.10 a cancel alone does not activate the
waiting consumer; the channel close does.)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

PROBE_TASK = "bench-probe"
BINDING_KEY = "tasks.#"
#: The streamer tools' own queue shape (streamer.topology.default_queue_arguments()).
CAPPED = {"x-max-length": 10_000, "x-overflow": "drop-head"}


def drain_arguments(count: int) -> dict[str, Any]:
    """The drain queue: room for every report and the sentinel, one active consumer."""
    return {
        "x-max-length": count + 1_000,
        "x-overflow": "drop-head",
        "x-single-active-consumer": True,
    }


class Admin:
    """One pika connection (heartbeats off: it idles while children run) for set-up only."""

    def __init__(self, url: str) -> None:
        import pika

        self._pika = pika
        params = pika.URLParameters(url)
        params.heartbeat = 0
        self.conn = pika.BlockingConnection(params)
        self.channel = self.conn.channel()
        self.channel.confirm_delivery()
        self._gate: Any = None
        self._sentinel = 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    # -- exchanges --------------------------------------------------------------------------

    def declare_exchange(self, name: str) -> None:
        """Durable topic, as streamer and the harness watcher declare it when missing."""
        self.channel.exchange_declare(name, exchange_type="topic", durable=True)

    def delete_exchange(self, name: str) -> None:
        self.channel.exchange_delete(name)

    def probe(self, exchange: str, alive: Callable[[], bool], timeout: float = 30.0) -> float:
        """Publish the probe until one is routed; returns the seconds it took.

        Raises:
            TimeoutError: no queue got bound within ``timeout`` (or the receiver died).
        """
        body = json.dumps(
            {"task_id": PROBE_TASK, "state": "waiting", "seq": 1, "sent_at": time.time()}
        ).encode()
        props = self._pika.BasicProperties(content_type="application/json", delivery_mode=1)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                self.channel.basic_publish(
                    exchange, f"tasks.{PROBE_TASK}", body, props, mandatory=True
                )
                return time.monotonic() - t0
            except self._pika.exceptions.UnroutableError:
                if not alive():
                    break
                self.conn.sleep(0.05)
        raise TimeoutError(f"no queue bound to {exchange!r} within {timeout:.0f} s")

    # -- the drain queue --------------------------------------------------------------------

    def declare_drain_queue(self, queue: str, exchange: str, count: int) -> None:
        """Durable, non-exclusive, bound ``tasks.#``, with the sentinel in front, gate shut."""
        ch = self.channel
        ch.queue_declare(queue, durable=True, arguments=drain_arguments(count))
        ch.queue_bind(queue, exchange, routing_key=BINDING_KEY)
        ch.basic_publish("", queue, b"sentinel", self._pika.BasicProperties(delivery_mode=1))
        gate = self.conn.channel()
        gate.basic_qos(prefetch_count=1)
        got: list[int] = []
        tag = gate.basic_consume(
            queue, lambda _c, method, _p, _b: got.append(method.delivery_tag), auto_ack=False
        )
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            self.conn.process_data_events(0.05)
        if not got:
            raise TimeoutError("the gate never got the sentinel")
        self._gate, self._gate_tag, self._sentinel = gate, tag, got[0]

    def queue_state(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers: active and waiting)."""
        ok = self.channel.queue_declare(queue, passive=True).method
        return int(ok.message_count), int(ok.consumer_count)

    def wait_consumers(
        self, queue: str, count: int, alive: Callable[[], bool], timeout: float = 30.0
    ) -> None:
        """Until ``count`` consumers are registered on ``queue`` (the gate is one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue_state(queue)[1] >= count:
                return
            if not alive():
                raise RuntimeError("the receiver exited before it consumed")
            self.conn.sleep(0.05)
        raise TimeoutError(f"no consumer on {queue!r} within {timeout:.0f} s")

    def open_gate(self) -> float:
        """Hand the queue to the waiting receiver; returns the wall time (time.time())."""
        gate = self._gate
        gate.basic_cancel(self._gate_tag)
        gate.basic_ack(self._sentinel)
        started = time.time()
        gate.close()
        self._gate = None
        return started

    def delete_queue(self, queue: str) -> None:
        if self._gate is not None:
            with contextlib.suppress(Exception):
                self._gate.close()
            self._gate = None
        self.channel.queue_delete(queue)
