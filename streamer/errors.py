"""The exceptions streamer raises.

Only bad input and misuse raise; broker trouble never reaches a publisher's caller
(it is logged and counted instead)::

    StreamerError
     ├── ConfigError        (also ValueError)  a setting is unknown, mistyped or invalid
     ├── InvalidReport      (also ValueError)  a report cannot be published as given
     └── BrokerError                           the broker refused us (consumers, handshakes)
          └── AuthenticationError              the broker rejected the credentials
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BrokerError",
    "ConfigError",
    "InvalidReport",
    "StreamerError",
]


class StreamerError(Exception):
    """Root of every error streamer raises on purpose; catch this to catch them all."""


class ConfigError(StreamerError, ValueError):
    """A setting is unknown, has the wrong type or an impossible value.

    Fix the named setting (file, ``STREAMER_*`` variable or argument) and retry.
    """


class InvalidReport(StreamerError, ValueError):
    """A report was refused before anything was enqueued.

    The message names the offending field; fix the report. Nothing was counted as published.
    """


class BrokerError(StreamerError):
    """The broker closed the connection or a channel with an error reply.

    Attributes:
        code: the AMQP reply code (e.g. 403, 404, 406), or 0 when there was none.
    """

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class AuthenticationError(BrokerError):
    """The broker refused the user name or password in the URL; fix the credentials."""
