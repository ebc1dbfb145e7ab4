"""The broker side of bench/throughput.py: the queue the clients publish into, the broker's
process for its CPU figures, and a URL safe to print. The clients never touch these."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

QUEUE_ARGUMENTS = {"x-max-length": 10_000, "x-overflow": "drop-head"}
BINDING_KEY = "tasks.#"


def mask_url(url: str) -> str:
    """Hide the password before a URL is printed or stored."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def find_broker_pid(url: str) -> int | None:
    """The local RabbitMQ VM listening on the URL's port, to report broker CPU per message.

    Matched by listening port: other (private, test) nodes may run on the same host.
    """
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = parts.port or 5672
    try:
        import psutil
    except ImportError:
        return None
    for proc in psutil.process_iter(["name"]):
        if not (proc.info.get("name") or "").startswith("beam"):
            continue
        try:
            conns = proc.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            return int(proc.pid)
    return None


class BrokerFixture:
    """Exchange (declared if missing) plus one capped queue bound ``tasks.#``.

    The queue is exclusive to this connection, so the broker drops it even if
    the harness dies; heartbeats are off because the parent sits idle in
    subprocess.run() between calls.
    """

    def __init__(self, url: str, exchange: str) -> None:
        import pika

        params = pika.URLParameters(url)
        params.heartbeat = 0
        self.conn = pika.BlockingConnection(params)
        self.channel = self.conn.channel()
        self.exchange = exchange
        self.queue = f"{exchange}.throughput.{os.getpid()}"
        try:
            self.channel.exchange_declare(exchange, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            self.channel = self.conn.channel()
            self.channel.exchange_declare(
                exchange, exchange_type="topic", durable=False, auto_delete=False
            )
        self.channel.queue_declare(self.queue, exclusive=True, arguments=QUEUE_ARGUMENTS)
        self.channel.queue_bind(self.queue, exchange, routing_key=BINDING_KEY)

    def purge(self) -> None:
        self.channel.queue_purge(self.queue)

    def depth(self) -> int:
        return int(self.channel.queue_declare(self.queue, passive=True).method.message_count)

    def close(self) -> None:
        try:
            self.channel.queue_delete(self.queue)
        finally:
            self.conn.close()
