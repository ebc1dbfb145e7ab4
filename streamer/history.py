"""The exchange's history: a stream queue the broker keeps, so a view started late still sees
what happened.

Reports are sent once and never queued for listeners who are not there yet, so a dashboard
restarted during a deploy used to show an empty board while hundreds of tasks ran. RabbitMQ
(3.9 and later) keeps append-only *stream* queues with time- and size-based retention that a
consumer reads from any point (``x-stream-offset``: ``first``, an offset or a timestamp).
``streamer history enable`` declares one, ``<exchange>.history``, bound to ``<prefix>.#``:
the broker then writes every report to it as well, and the publisher does not change.
Streams have no per-key compaction, so a view rebuilds each task's latest state by folding
the replay into its board, then goes on reading live from the same consumer (no gap and no
duplicate at the boundary).

This module names the stream, declares, describes and deletes it, and parses the
``--since`` forms. The reading itself is the receiver's (:class:`streamer.receiver.Receiver`
with ``stream=``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from .amqp import Connection, ConnectionCallbacks, Delivery, Keeper, Status, open_connection
from .amqp.link import classify
from .errors import BrokerError, ConfigError, NoHistory, UntrustedCertificate
from .message import classify as classify_body
from .report import Report
from .routing import TopicFilter
from .settings import Settings

__all__ = [
    "Replay",
    "Since",
    "Window",
    "describe",
    "disable",
    "enable",
    "ensure",
    "parse_duration",
    "parse_since",
    "parse_size",
    "replay_for",
    "stream_name",
    "window",
]

log = logging.getLogger(__name__)

_CHANNEL: Final = 1
_LAST: Final = 2
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_SIZES: Final = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
#: Retention drops whole segments: small ones keep the window close to what was asked.
_SEGMENT_MAX: Final = 50 * 10**6
_SEGMENT_MIN: Final = 10**6
#: How far before a ``--since`` time the broker is asked to start: it starts at the chunk
#: holding that time, by its own clock, and reports carry the sender's; the reports sent
#: before the time are skipped by the reader.
SINCE_MARGIN: Final = 60.0
#: How long the newest messages of a stream are waited for, at most, to describe it.
_SETTLE: Final = 0.2


def stream_name(settings: Settings) -> str:
    """The history stream of the settings' exchange."""
    return f"{settings.exchange}.history"


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in ``"90s"``, ``"10m"``, ``"1h30m"``, ``"7d"``, ``"2w"`` or a plain number.

    Raises:
        ConfigError: anything else, naming ``what`` and the text.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if not parts or _DURATION.sub("", value).strip():
            raise ConfigError(
                f"{what} {text!r} is not a duration; use e.g. 90s, 10m, 1h30m or 7d"
            ) from None
        seconds = sum(float(n) * _UNITS[unit.lower()] for n, unit in parts)
    if seconds <= 0:
        raise ConfigError(f"{what} {text!r} must be longer than 0 s")
    return seconds


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes in ``"1GB"``, ``"500MB"``, ``"2GiB"`` or a plain number.

    Raises:
        ConfigError: anything else, naming ``what`` and the text.
    """
    if isinstance(text, int):
        size = text
    else:
        found = _SIZE.fullmatch(text.strip())
        if found is None:
            raise ConfigError(f"{what} {text!r} is not a size; use e.g. 500MB, 1GB or 2GiB")
        size = int(float(found.group(1)) * _SIZES[(found.group(2) or "").lower()])
    if size < _SEGMENT_MIN:
        raise ConfigError(f"{what} {text!r} is too small: at least 1MB")
    return size


@dataclass(frozen=True, slots=True)
class Since:
    """Where a view starts reading the history.

    Attributes:
        offset: the ``x-stream-offset`` to ask for (``"first"`` or a time, a little early).
        cut: reports sent before this time (epoch seconds) are skipped; None keeps all.
        text: as given, for messages.
    """

    offset: Any
    cut: float | None
    text: str

    def keeps(self, report: Report) -> bool:
        """Whether ``report`` was sent at or after the cut (foreign reports without a send
        time are kept: nothing says they are older)."""
        cut = self.cut
        return cut is None or not report.sent_at or report.sent_at >= cut


def parse_since(text: str, now: float | None = None) -> Since:
    """``first`` (the whole history), a duration back from now (``10m``, ``1h``) or an ISO
    time (``2026-11-30T12:03:00``, local time unless it names a zone).

    Raises:
        ConfigError: none of those.
    """
    value = text.strip()
    if value.lower() == "first":
        return Since("first", None, value)
    now = time.time() if now is None else now
    try:
        cut = now - parse_duration(value, "--since")
    except ConfigError:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(
                f"--since {text!r}: expected 'first', a duration back from now (10m, 1h) or "
                "an ISO time (2026-11-30T12:03:00)"
            ) from None
        cut = when.timestamp()  # a naive time is local time
    start = datetime.fromtimestamp(max(cut - SINCE_MARGIN, 0), tz=UTC)
    return Since(start, cut, value)


@dataclass(frozen=True, slots=True)
class Window:
    """What a history holds, from its oldest message to its newest.

    Attributes:
        first, last: the offsets of the oldest and newest messages (-1 when empty).
        first_at, last_at: when the reports there were sent (None when not reports).
        mean_size: the mean body size of the messages read to find the ends.
    """

    first: int
    last: int
    first_at: float | None
    last_at: float | None
    mean_size: float

    @property
    def messages(self) -> int:
        """About how many messages it holds (the broker's own markers take a few offsets)."""
        return self.last - self.first + 1 if self.last >= 0 else 0


class _Ends(ConnectionCallbacks):
    """Collects the deliveries of the two probing consumers (oldest, newest)."""

    def __init__(self) -> None:
        self.got: dict[int, list[tuple[int, bytes, str]]] = {_CHANNEL: [], _LAST: []}
        self.conn: Connection | None = None
        self.arrived = asyncio.Event()

    def on_deliveries(self, channel: int, deliveries: list[Delivery]) -> None:
        conn = self.conn
        offset = conn.stream_offset(channel) if conn is not None else -1
        if channel == _LAST:
            _, _, content_type, body = deliveries[-1]
        else:  # the oldest: the first of the batch (a stream's offsets are consecutive)
            _, _, content_type, body = deliveries[0]
            offset -= len(deliveries) - 1
        self.got[channel].append((offset, body, content_type))
        self.arrived.set()
        if conn is not None and channel == _LAST:  # (the oldest: one batch is enough)
            conn.ack(channel, deliveries[-1][0])


async def _connect(
    settings: Settings, setup: Callable[[Connection], Any], callbacks: ConnectionCallbacks
) -> Connection:
    """One connection for a one-off question, the URLs tried in order.

    Raises:
        the first URL's mapped error when none answers (refused credentials and untrusted
        certificates as such).
    """
    errors: list[BaseException] = []
    for url in settings.urls:
        try:
            return await open_connection(
                url, settings, name=f"{settings.client_name} history", callbacks=callbacks,
                setup=setup,
            )  # fmt: skip
        except (OSError, TimeoutError, EOFError, BrokerError) as exc:
            shown, fatal = classify(url, exc)
            if fatal:
                raise shown from exc
            errors.append(shown)
    error = errors[0]
    raise OSError(f"no broker answered ({error})") from error


async def _no_setup(conn: Connection) -> None:
    await conn.open_channel(_CHANNEL)


async def enable(settings: Settings, max_age: float, max_bytes: int) -> None:
    """Declare the history stream (idempotently) and bind it to ``<prefix>.#``.

    Raises:
        ConfigError: it exists with another retention (the broker refuses a declare with
            other arguments); disable it first.
    """
    conn = await _connect(settings, _no_setup, ConnectionCallbacks())
    name = stream_name(settings)
    segment = max(_SEGMENT_MIN, min(_SEGMENT_MAX, max_bytes // 10))
    try:
        await conn.declare_exchange(_CHANNEL, settings.exchange, confirm=False)
        await conn.declare_queue(
            _CHANNEL,
            name,
            durable=True,
            auto_delete=False,
            exclusive=False,
            arguments={
                "x-queue-type": "stream",
                "x-max-age": f"{round(max_age)}s",
                "x-max-length-bytes": max_bytes,
                "x-stream-max-segment-size-bytes": segment,
            },
        )
        await conn.bind(_CHANNEL, name, settings.exchange, f"{settings.routing_prefix}.#")
    except BrokerError as exc:
        if exc.code == 406:
            raise ConfigError(
                f"the history {name!r} exists with another retention ({exc}); "
                "'streamer history disable' deletes it (and what it holds), then enable again"
            ) from None
        raise
    finally:
        await conn.close(settings.close_timeout)


async def ensure(settings: Settings) -> bool:
    """Enable the history the settings ask for (``history_max_age``), if they ask; a
    history that exists with another retention is left as it is. Returns whether one is
    asked for."""
    if settings.history_max_age is None:
        return False
    try:
        await enable(
            settings,
            parse_duration(settings.history_max_age, "history_max_age"),
            parse_size(settings.history_max_bytes, "history_max_bytes"),
        )
    except ConfigError as exc:
        if "exists with another retention" not in str(exc):
            raise
    return True


async def disable(settings: Settings) -> int | None:
    """Delete the history stream; returns the messages it held, None if there was none."""
    conn = await _connect(settings, _no_setup, ConnectionCallbacks())
    try:
        try:
            await conn.check_queue(_CHANNEL, stream_name(settings))
        except BrokerError as exc:
            if exc.code != 404:
                raise
            return None
        return await conn.delete_queue(_CHANNEL, stream_name(settings))
    finally:
        await conn.close(settings.close_timeout)


async def window(settings: Settings, *, wait: float = 2.0) -> Window | None:
    """The oldest and newest messages of the history, or None when there is no history.

    The oldest is read from offset ``first``; the newest from ``last`` (the broker sends the
    newest chunk), waiting until nothing more comes for a moment (at most ``wait`` s).
    """
    ends = _Ends()
    name = stream_name(settings)

    async def setup(conn: Connection) -> None:
        ends.conn = conn
        await conn.open_channel(_CHANNEL)
        await conn.check_queue(_CHANNEL, name)
        await conn.open_channel(_LAST)
        await conn.consume(_CHANNEL, name, prefetch=1, no_ack=False,
                           arguments={"x-stream-offset": "first"})  # fmt: skip
        await conn.consume(_LAST, name, prefetch=2_000, no_ack=False,
                           arguments={"x-stream-offset": "last"})  # fmt: skip

    try:
        conn = await _connect(settings, setup, ends)
    except BrokerError as exc:
        if exc.code == 404:
            return None
        raise
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            ends.arrived.clear()
            try:
                async with asyncio.timeout(_SETTLE):
                    await ends.arrived.wait()
            except TimeoutError:
                if ends.got[_LAST] or not ends.got[_CHANNEL]:
                    break  # the newest chunk has come, or the stream is empty
    finally:
        await conn.close(settings.close_timeout)
    oldest, newest = ends.got[_CHANNEL][:1], ends.got[_LAST][-1:]
    if not oldest or not newest:
        return Window(-1, -1, None, None, 0.0)
    sampled = oldest + newest
    return Window(
        first=oldest[0][0],
        last=max(oldest[0][0], newest[0][0]),
        first_at=_sent_at(*oldest[0][1:], settings.max_body),
        last_at=_sent_at(*newest[0][1:], settings.max_body),
        mean_size=sum(len(body) for _, body, _ in sampled) / len(sampled),
    )


def _no_history(settings: Settings) -> NoHistory:
    return NoHistory(
        f"exchange {settings.exchange!r} keeps no history (no stream queue "
        f"{stream_name(settings)!r}); start one with 'streamer history enable --max-age 1h'"
    )


class Replay:
    """A view's reading of the history: which reports it shows, when each happened, and how
    far the replay has come ("replaying… n%") until it reaches the newest message the history
    held when the view started; from there on the same consumer reads live.

    Args:
        since: where the view starts.
        found: the history's window when the view started (its newest offset is the goal).
        keys: the view's binding keys (the stream holds every key of the exchange).
        started: when the view started: reports sent before are history, folded at the
            time they were sent (a task finished an hour ago shows as finished an hour ago,
            and its latency is not an hour).
    """

    __slots__ = ("_filter", "_start", "caught_up", "goal", "since", "started", "stream")

    def __init__(
        self, since: Since, found: Window, keys: list[str], started: float, stream: str = ""
    ) -> None:
        self.since = since
        self.stream = stream  # the history stream's name
        self.goal = found.last
        self.started = started
        self._filter = TopicFilter(keys)
        self._start = -1
        past = since.cut is not None and found.last_at is not None and found.last_at < since.cut
        self.caught_up = found.messages == 0 or past

    @property
    def filtering(self) -> bool:
        """Whether :meth:`keeps` can say no (else a view need not ask)."""
        return self.since.cut is not None or not self._filter.everything

    def when(self, key: str, report: Report, now: float) -> float | None:
        """When to fold ``report`` in: the time it was sent if it is history (before the view
        started), ``now`` if it is live, None if the view does not show it."""
        if self.filtering and not self.keeps(key, report):
            return None
        sent = report.sent_at
        return sent if sent and sent < self.started else now

    def keeps(self, key: str, report: Report) -> bool:
        """Whether the view shows this report (its key is bound, it was sent since)."""
        return self.since.keeps(report) and (self._filter.everything or self._filter(key))

    def progress(self, offset: int) -> float | None:
        """How much of the replay is done (0..1) once the receiver has handed over
        ``offset``; None once it is done (the view is live)."""
        if self.caught_up:
            return None
        if offset < 0:
            return 0.0
        if self._start < 0:
            self._start = offset
        if offset >= self.goal:
            self.caught_up = True
            return None
        return (offset - self._start) / max(self.goal - self._start, 1)


class _Probe(Keeper["Window | None"]):
    """Asks the history about its window before a view starts, through the one reconnect
    loop: a broker that does not answer yet is waited for with the same backoff, the same
    status (the view's, shared with its receiver) and the same log lines as the receiver's."""

    def __init__(self, settings: Settings, status: Status, *, want: bool) -> None:
        super().__init__(settings, what=status.what, fatal=True, status=status)
        self.want = want
        self.found: Window | None = None

    async def dial(self, url: str) -> Window | None:
        one = msgspec.structs.replace(self.settings, url=url)
        try:
            await ensure(one)
            return await window(one) if self.want else None
        except (OSError, UntrustedCertificate) as exc:  # as dialling it said: retry or not
            cause = exc.__cause__
            if isinstance(cause, OSError | TimeoutError | EOFError):
                raise cause from None
            raise

    async def until_lost(self, conn: Window | None) -> object:
        self.found = conn
        self.stop()  # the answer is in: done (run() returns)
        return "done"

    async def hang_up(self, conn: Window | None, timeout: float) -> None:
        return None  # (each question's connection is closed as soon as it is answered)


async def replay_for(
    settings: Settings,
    since: Since | None,
    keys: list[str],
    *,
    by_default: bool = False,
    status: Status | None = None,
) -> Replay | None:
    """What a view reads before going live: the history from ``since``; without one, the
    whole history when ``by_default`` and one exists (the dashboard), else nothing.

    The history the settings ask for (``history_max_age``) is declared first. A broker that
    does not answer is waited for, as the receiver would (the view starts once it answers),
    with ``status`` (the view's) kept up to date meanwhile.

    Raises:
        NoHistory: ``since`` was given, and the exchange keeps no history.
        AuthenticationError, UntrustedCertificate: retrying cannot help.
    """
    if since is None and not by_default and settings.history_max_age is None:
        return None
    probe = _Probe(
        settings,
        status if status is not None else Status("history"),
        want=since is not None or by_default,
    )
    await probe.run()
    found = probe.found
    if found is None:
        if since is None:
            return None
        raise _no_history(settings)
    if keys == [f"{settings.routing_prefix}.#"]:  # what the history is bound to: all of it
        keys = ["#"]
    return Replay(since or parse_since("first"), found, keys, time.time(), stream_name(settings))


def _sent_at(body: bytes, content_type: str, max_body: int) -> float | None:
    found = classify_body(body, content_type, max_body)
    return None if isinstance(found, str) or not found.sent_at else found.sent_at


def describe(found: Window, settings: Settings, now: float | None = None) -> str:
    """The ``history status`` text: name, messages, size (estimated), oldest and newest."""
    now = time.time() if now is None else now
    lines = [f"history {stream_name(settings)!r} of exchange {settings.exchange!r}"]
    if not found.messages:
        lines.append("  empty: nothing published since it was enabled (or all expired)")
        return "\n".join(lines)
    size = found.messages * found.mean_size
    lines.append(
        f"  about {found.messages:,} messages (offsets {found.first:,}..{found.last:,}), "
        f"about {_human_bytes(size)} of reports"
    )
    for label, at in (("oldest", found.first_at), ("newest", found.last_at)):
        if at is not None:
            stamp = datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")
            lines.append(f"  {label} report {stamp} ({_ago(now - at)} ago)")
    return "\n".join(lines)


def _human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
