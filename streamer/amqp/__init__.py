"""The one AMQP 0-9-1 core both directions use: a hand-read connection (confirms and
deliveries without per-message parsing) and the connect/reconnect loop with failover, TLS and
one mapping of broker failures. The publisher's pool and the receiver are built on it."""

from __future__ import annotations

from .connection import Connection, ConnectionCallbacks, Delivery, State
from .link import Keeper, Link, classify, open_connection, tls_context
from .status import Phase, Status

__all__ = [
    "Connection",
    "ConnectionCallbacks",
    "Delivery",
    "Keeper",
    "Link",
    "Phase",
    "State",
    "Status",
    "classify",
    "open_connection",
    "tls_context",
]
