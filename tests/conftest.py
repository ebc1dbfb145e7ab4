"""Shared fixtures: the broker every integration test talks to, and unique names."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from streamer.settings import DEFAULT_URL, mask_url


def _probe(url: str) -> str | None:
    """Return why ``url`` is not an AMQP broker we can reach, or None if it is."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 5672), timeout=3) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            sock.settimeout(3)
            first = sock.recv(1)
    except OSError as exc:
        return f"{exc}"
    return None if first == b"\x01" else "the peer does not speak AMQP 0-9-1"


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The broker under test: ``$STREAMER_URL`` or the local default. Missing = failure."""
    url = os.environ.get("STREAMER_URL") or DEFAULT_URL
    problem = _probe(url)
    if problem is not None:
        pytest.fail(
            f"no RabbitMQ broker at {mask_url(url)} ({problem}). Integration tests need a "
            "real broker: run `make test` (which finds or starts one) or set STREAMER_URL.",
            pytrace=False,
        )
    return url


@pytest.fixture
def unique() -> str:
    """A short unique token for queue and exchange names of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def free_port() -> Iterator[int]:
    """A loopback TCP port nobody listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port
