"""The state of one kept connection, as people see it: connected, or why not and since when.

A broker that refuses connections is retried several times a second; a line per attempt
buries everything else in a log and garbles a live view. So the reconnect loop
(:class:`~streamer.amqp.Keeper`) keeps one :class:`Status` up to date, logs a line only when
its :class:`Phase` changes, and every view renders the same object: a status line on a
terminal, ``watch``'s header, the dashboard's page. Nothing here does I/O or reads a clock:
the keeper passes the times in, and :meth:`Status.text` takes ``now``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import AuthenticationError, UntrustedCertificate
from ..settings import mask_url

__all__ = ["Phase", "Status"]


class Phase(enum.Enum):
    """Where a kept connection is."""

    CONNECTING = "connecting"  # the first attempt is under way
    CONNECTED = "connected"
    LOST = "lost"  # it was connected and is gone; reconnecting
    UNREACHABLE = "unreachable"  # attempts fail: nothing (usable) answers
    REFUSED = "refused"  # the broker refused the credentials
    UNTRUSTED = "untrusted"  # the broker's certificate did not verify
    STOPPED = "stopped"


#: How each phase reads in a line (the broker's URL follows).
_SAYS = {
    Phase.CONNECTING: "connecting to",
    Phase.CONNECTED: "connected to",
    Phase.LOST: "lost connection to",
    Phase.UNREACHABLE: "broker unreachable at",
    Phase.REFUSED: "credentials refused by",
    Phase.UNTRUSTED: "certificate not trusted at",
    Phase.STOPPED: "stopped; was connecting to",
}


def phase_of(error: BaseException) -> Phase:
    """The phase a failed attempt leaves a connection in (``error`` as :func:`classify`
    maps it)."""
    if isinstance(error, AuthenticationError):
        return Phase.REFUSED
    if isinstance(error, UntrustedCertificate):
        return Phase.UNTRUSTED
    return Phase.UNREACHABLE


@dataclass(slots=True)
class Status:
    """One kept connection's state, for views to render and the keeper to log on change.

    Attributes:
        what: who is connecting ("listen", "publisher", ...).
        url: the URL tried last (password masked).
        phase: where it is.
        since: when (Unix seconds) it entered ``phase``.
        attempts: failed attempts since the last success (or since the start).
        error: why the last attempt failed, or why the connection was lost.
        retry_at: when (Unix seconds) the next attempt starts; None while one is under way
            or while connected.
        ever_connected: whether it has been connected at least once.
    """

    what: str
    url: str = ""
    phase: Phase = Phase.CONNECTING
    since: float = 0.0
    attempts: int = 0
    error: BaseException | str | None = None
    retry_at: float | None = None
    ever_connected: bool = False

    @property
    def connected(self) -> bool:
        return self.phase is Phase.CONNECTED

    def move(self, phase: Phase, now: float) -> bool:
        """Enter ``phase`` at ``now``; returns whether that is a change (worth a log line)."""
        if phase is self.phase:
            return False
        self.phase, self.since = phase, now
        if phase is Phase.CONNECTED:
            self.ever_connected = True
            self.attempts, self.retry_at = 0, None
        return True

    def trying(self, url: str) -> None:
        """An attempt on ``url`` starts now."""
        self.url, self.retry_at = mask_url(url), None

    def reason(self) -> str:
        """The last error, short: "connection refused" rather than "[Errno 111] Connection
        refused"."""
        error = self.error
        if error is None:
            return ""
        if isinstance(error, TimeoutError):
            return "timed out"
        if isinstance(error, OSError) and error.strerror:  # not "[Errno 111] Connection ..."
            return error.strerror[:1].lower() + error.strerror[1:]
        return str(error) or type(error).__name__

    def headline(self) -> str:
        """The phase and the broker, as one log line says it (no attempt counts or clock)."""
        reason = self.reason()
        if reason and self.phase in (Phase.REFUSED, Phase.UNTRUSTED):
            return f"{self.what}: {reason}"  # (these errors name the broker and the fix)
        line = f"{self.what}: {_SAYS[self.phase]} {self.url}"
        return f"{line}: {reason}" if reason and not self.connected else line

    def text(self, now: float) -> str:
        """The status line: ``connecting to amqp://guest:***@host/ — attempt 4, connection
        refused, next in 0.8 s``; for a terminal line, a view's header, a page."""
        if self.phase is Phase.CONNECTED:
            return f"connected to {self.url}"
        verb = "reconnecting to" if self.ever_connected else "connecting to"
        short = {Phase.REFUSED: "credentials refused", Phase.UNTRUSTED: "certificate not trusted"}
        parts = [f"attempt {max(self.attempts, 1)}"]
        reason = short.get(self.phase) or self.reason()
        if reason:
            parts.append(reason)
        if self.retry_at is not None:
            parts.append(f"next in {max(self.retry_at - now, 0.0):.1f} s")
        return f"{verb} {self.url} — {', '.join(parts)}"
