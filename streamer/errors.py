"""The exceptions streamer raises.

Only bad input and misuse raise; broker trouble never reaches a publisher's caller
(it is logged and counted instead). Consumer callbacks raise the ``ConsumerSignal``
subclasses to say what to do with the message they were given::

    StreamerError
     ├── ConfigError        (also ValueError)  a setting is unknown, mistyped or invalid
     │    ├── UntrustedCertificate             the broker's TLS certificate did not verify
     │    └── NoHistory                        --since, but the exchange keeps no history
     ├── InvalidReport      (also ValueError)  a report cannot be published as given
     ├── BrokerError                           the broker refused us (consumers, handshakes)
     │    └── AuthenticationError              the broker rejected the credentials
     ├── CallbackError                         a consumer callback failed (halt_on_error)
     └── ConsumerSignal                        raised by a consumer callback, on purpose
          ├── Nack                             requeue the message for a later delivery
          ├── Drop                             reject the message, without requeueing it
          └── HaltConsumer                     stop consuming; carries the exit code
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BrokerError",
    "CallbackError",
    "ConfigError",
    "ConsumerSignal",
    "Drop",
    "HaltConsumer",
    "InvalidReport",
    "Nack",
    "NoHistory",
    "StreamerError",
    "UntrustedCertificate",
]


class StreamerError(Exception):
    """Root of every error streamer raises on purpose; catch this to catch them all."""


class ConfigError(StreamerError, ValueError):
    """A setting is unknown, has the wrong type or an impossible value.

    Fix the named setting (file, ``STREAMER_*`` variable or argument) and retry.
    """


class UntrustedCertificate(ConfigError):
    """The broker's TLS certificate did not verify (unknown CA, or issued for another name).

    Retrying cannot help: set ``ca_file`` to the CA bundle that signed it and connect by a
    host name it was issued for.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"{url}: the broker's TLS certificate is not trusted ({reason}); set ca_file to "
            "the CA bundle that signed it and connect by a host name it was issued for"
        )


class NoHistory(ConfigError):
    """A view was asked to start in the past (``--since``), but the exchange keeps no history.

    ``streamer history enable`` starts one; it holds what is published from then on.
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


class ConsumerSignal(StreamerError):
    """Raised by a consumer callback to decide a message's fate instead of acking it.

    Never an error: the consumer catches it, settles the message and logs nothing alarming.
    """


class Nack(ConsumerSignal):
    """The message cannot be handled now: the broker requeues it and delivers it again later.

    Use it for transient trouble (a database that is down); a message that can never be
    handled should be dropped instead, or it comes back for ever.
    """


class Drop(ConsumerSignal):
    """The callback does not want this message: it is rejected, never redelivered."""


class HaltConsumer(ConsumerSignal):
    """Stop consuming after this message; ``consume()`` returns ``exit_code``.

    Attributes:
        exit_code: what ``consume()`` returns and ``streamer consume`` exits with.
        reason: why, for the log.
        requeue: put the message back in the queue instead of acknowledging it.
    """

    def __init__(self, exit_code: int = 0, reason: str = "", requeue: bool = False) -> None:
        super().__init__(reason or f"consumer halted with exit code {exit_code}")
        self.exit_code = exit_code
        self.reason = reason
        self.requeue = requeue


class CallbackError(StreamerError):
    """A consumer callback raised and ``halt_on_error`` was on; ``__cause__`` is its error.

    Its traceback was logged when it happened; the message was rejected, not requeued.
    """
