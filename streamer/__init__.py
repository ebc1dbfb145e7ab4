"""streamer: stream task status reports to RabbitMQ without ever blocking the task.

The public API is what ``__all__`` lists; everything else is private by name or module.
"""

from __future__ import annotations

from ._version import __version__
from .consumer import Consumer, Message, consume, subscribe
from .embed import BackgroundPublisher
from .errors import (
    AuthenticationError,
    BrokerError,
    CallbackError,
    ConfigError,
    Drop,
    HaltConsumer,
    InvalidReport,
    Nack,
    StreamerError,
    UntrustedCertificate,
)
from .publisher import Publisher
from .report import STATES, TERMINAL_STATES, Report, TaskError, decode, encode
from .routing import routing_key
from .settings import Settings, load_settings, mask_url
from .stats import Stats
from .task import TaskReporter

__all__ = [
    "STATES",
    "TERMINAL_STATES",
    "AuthenticationError",
    "BackgroundPublisher",
    "BrokerError",
    "CallbackError",
    "ConfigError",
    "Consumer",
    "Drop",
    "HaltConsumer",
    "InvalidReport",
    "Message",
    "Nack",
    "Publisher",
    "Report",
    "Settings",
    "Stats",
    "StreamerError",
    "TaskError",
    "TaskReporter",
    "UntrustedCertificate",
    "__version__",
    "consume",
    "decode",
    "encode",
    "load_settings",
    "mask_url",
    "routing_key",
    "subscribe",
]
