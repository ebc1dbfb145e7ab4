"""A delivered report as a consumer callback sees it, and how a body is told malformed.

Every receiving tool (listen, watch, the dashboard, ``consume()``) classifies bodies the same
way, so a malformed message is counted under the same kind whichever tool saw it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from .report import Report, decode_fast

__all__ = ["MALFORMED", "Malformed", "Message", "classify"]

log = logging.getLogger(__name__)

_LOG_INTERVAL: Final = 60.0
_JSON: Final = "application/json"

#: Kinds of malformed message, each a key of :attr:`~streamer.Consumer.counters`.
MALFORMED: Final = (
    "too_large",
    "content_type",
    "not_utf8",
    "not_json",
    "not_a_report",
    "bad_seq",  # a report whose seq is not an integer in 0..MAX_SEQ
)


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded report as a callback receives it, with where and how it arrived.

    Attributes:
        report: the decoded, validated Task Report.
        routing_key: e.g. ``tasks.8f3c``.
        exchange: the exchange it was published to.
        queue: the queue it was consumed from (the broker-made name for an anonymous one).
        body: the raw body, as received.
        properties: the AMQP basic properties (pamqp ``BasicProperties``).
        delivery_tag: the channel's tag for this delivery.
        redelivered: the broker delivered it before (e.g. after a ``Nack``).
        consumer_tag: the consumer it was delivered to.
    """

    report: Report
    routing_key: str
    exchange: str
    queue: str
    body: bytes
    properties: Any
    delivery_tag: int = 0
    redelivered: bool = False
    consumer_tag: str = ""

    @property
    def topic(self) -> str:
        """The routing key, under fedora-messaging's name for it."""
        return self.routing_key

    @property
    def headers(self) -> dict[str, Any]:
        """The AMQP header table (empty unless the publisher's ``headers`` setting is on)."""
        return dict(getattr(self.properties, "headers", None) or {})


def classify(
    body: bytes,
    content_type: str | None,
    max_body: int,
    decode: Callable[[bytes], Report] = decode_fast,
) -> Report | str:
    """Decode a body into a :class:`Report`, or name why it is malformed (a ``MALFORMED`` kind).

    A missing content type is accepted (any AMQP client may publish a report); an explicit
    one must be ``application/json``. The UTF-8 check only runs on bodies that failed to
    decode, so well-formed reports pay for one JSON decode only. ``decode`` may be
    :func:`~streamer.report.decode_received` (the viewing tools), which checks the same.
    """
    if len(body) > max_body:
        return "too_large"
    if (
        content_type
        and content_type != _JSON  # the common case, without parsing
        and content_type.split(";")[0].strip().lower() != _JSON
    ):
        return "content_type"
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        return "bad_seq" if str(exc).endswith("`$.seq`") else "not_a_report"
    except UnicodeDecodeError:  # msgspec checks strings' UTF-8 and raises this one
        return "not_utf8"
    except (msgspec.DecodeError, ValueError):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return "not_utf8"
        return "not_json"


class Malformed:
    """Malformed messages counted by kind; the first of each kind is logged, then at most one
    line a minute per kind (a foreign publisher must not flood the log).

    Attributes:
        counts: kind (:data:`MALFORMED`) -> how many.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(MALFORMED, 0)
        self._logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = dict.fromkeys(MALFORMED, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def note(self, kind: str, routing_key: str, size: int, app_id: str | None = None) -> None:
        """Count one malformed message of ``kind``; log it unless one was logged recently."""
        self.counts[kind] += 1
        now = time.monotonic()
        last = self._logged.get(kind)
        if last is not None and now - last < _LOG_INTERVAL:
            self._unlogged[kind] += 1
            return
        self._logged[kind] = now
        suppressed, self._unlogged[kind] = self._unlogged[kind], 0
        log.warning(
            "rejected a malformed message (%s), routing key %r, app_id %r, %d bytes%s",
            kind,
            routing_key,
            app_id,
            size,
            f"; {suppressed} more of this kind since the last warning" if suppressed else "",
        )
