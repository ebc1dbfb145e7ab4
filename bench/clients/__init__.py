"""The publishing clients bench/throughput.py compares, one module per library, by name.

Each module imports its library only inside its run function, so importing this registry
stays cheap and a missing library fails that client alone, in its own subprocess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._common import Message, RunOptions, Unavailable, Workload, build_messages, digest
from .blaster import run_blaster
from .with_aio_pika import run_aio_pika_await, run_aio_pika_pipelined
from .with_aiormq import run_aiormq_pipelined
from .with_kombu import run_kombu
from .with_pika import run_pika
from .with_streamer import run_streamer

Runner = Callable[[str, str, Sequence[Message], RunOptions], dict[str, Any]]
CLIENTS: dict[str, Runner] = {
    "aio-pika-await": run_aio_pika_await,
    "aio-pika-pipelined": run_aio_pika_pipelined,
    "aiormq-pipelined": run_aiormq_pipelined,
    "pika": run_pika,
    "kombu": run_kombu,
    "blaster": run_blaster,
    "streamer": run_streamer,
}
# One round-trip per message: capped at --time-cap seconds so the run stays short.
SERIAL_CLIENTS = {"aio-pika-await", "pika", "kombu"}

__all__ = [
    "CLIENTS",
    "SERIAL_CLIENTS",
    "Message",
    "RunOptions",
    "Runner",
    "Unavailable",
    "Workload",
    "build_messages",
    "digest",
]
