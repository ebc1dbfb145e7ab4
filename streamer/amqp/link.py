"""Opening a connection and keeping it open: the one connect and reconnect loop.

:func:`open_connection` dials one URL (TLS verified by default, a client certificate when
configured), logs in (``PLAIN``, or ``EXTERNAL`` with a client certificate and no password in
the URL) and runs the owner's set-up (channels, declarations, consumers), all within
``connect_timeout``. :class:`Link` keeps one connection alive for as long as it runs: it tries
the broker URLs in order (the first is preferred: failover, not load balancing), runs the
set-up again on every new connection, and backs off with jitter between rounds. The publisher's
pool and the receiver both use it; nothing else in the repository dials a broker by hand.

Failures are mapped once, here: refused credentials (:class:`~streamer.AuthenticationError`),
an untrusted certificate (:class:`~streamer.UntrustedCertificate`) and a refused set-up
(403/404/406 on a declaration) cannot be cured by retrying; everything else (refused
connections, timeouts, resets) can. The loop keeps a :class:`~streamer.amqp.status.Status`
that views render (a status line, a header, a page) and logs one line per change of its phase
(unreachable, connected, lost, credentials refused, certificate not trusted), never one per
attempt: a broker down for an hour costs a log two lines, not thousands.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar
from urllib.parse import unquote, urlsplit

from ..errors import AuthenticationError, BrokerError, UntrustedCertificate
from ..settings import Settings, mask_url
from .connection import Connection, ConnectionCallbacks, client_properties
from .status import Phase, Status, phase_of

__all__ = ["Keeper", "Link", "classify", "open_connection", "tls_context"]

log = logging.getLogger(__name__)

_REFUSED_SETUP: Final = frozenset({403, 404, 406})  # access refused, not found, inconsistent
# ... unless the reply says the queue is there but not running yet: a durable queue or a
# stream whose process is still starting after a broker restart answers 404 or 406 with
# one of these for a few seconds, and a later attempt succeeds.
_STARTING: Final = ("is down or inaccessible", "does not have a running replica", "noproc")

Setup = Callable[[Connection], Awaitable[None]]
C = TypeVar("C")


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Verify the broker (``ca_file`` or the system's CAs) and present ``cert_file`` if set."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.cert_file is not None:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


def _credentials(url: str, settings: Settings) -> tuple[str, str]:
    """The SASL mechanism and response: EXTERNAL for a client certificate and no password."""
    parts = urlsplit(url)
    if settings.cert_file is not None and parts.password is None:
        return "EXTERNAL", ""
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    return "PLAIN", f"\0{user}\0{password}"


async def open_connection(
    url: str,
    settings: Settings,
    *,
    name: str,
    callbacks: ConnectionCallbacks,
    setup: Setup,
    heartbeat: int | None = None,
) -> Connection:
    """Connect to ``url``, log in and run ``setup``, all within ``connect_timeout``.

    Raises:
        AuthenticationError: the broker refused the credentials.
        BrokerError: the broker refused something else.
        ssl.SSLCertVerificationError: the broker's certificate did not verify.
        OSError, TimeoutError, EOFError: nothing usable answered at ``url``.
    """
    parts = urlsplit(url)
    tls = tls_context(settings) if parts.scheme == "amqps" else None
    port = parts.port or (5671 if tls else 5672)
    mechanism, response = _credentials(url, settings)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    beat = settings.heartbeat if heartbeat is None else heartbeat
    loop = asyncio.get_running_loop()
    conn: Connection | None = None
    try:
        async with asyncio.timeout(settings.connect_timeout):
            _, conn = await loop.create_connection(
                lambda: Connection(url, name, beat, callbacks),
                parts.hostname or "localhost",
                port,
                ssl=tls,
                server_hostname=parts.hostname if tls else None,
            )
            await conn.handshake(client_properties(name), mechanism, response, vhost)
            await setup(conn)
        conn.opened()
    except BaseException:
        if conn is not None:
            conn.abandon()
        raise
    return conn


def classify(url: str, exc: BaseException) -> tuple[BaseException, bool]:
    """What a failed attempt means: the error to show, and whether retrying cannot help."""
    if isinstance(exc, AuthenticationError):
        return exc, True
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UntrustedCertificate(mask_url(url), exc.verify_message or str(exc)), True
    if isinstance(exc, BrokerError) and exc.code in _REFUSED_SETUP:
        return exc, not any(text in str(exc) for text in _STARTING)
    return exc, False


class Keeper(Generic[C]):
    """Keeps one connection open while it runs: connect, set up, wait for the loss, again.

    The loop, the failover order, the backoff, the failure mapping and the logging are here
    once; a subclass says only how to dial one URL (:meth:`dial`, set-up included), how to
    wait for the connection's loss (:meth:`until_lost`) and how to hang up. :class:`Link` is
    the one for the core's own connection; the aiormq-based ``consume()`` has another.

    Args:
        settings: URLs (failover order), timeouts, backoff.
        what: who is connecting, for log lines ("publisher", "receiver", "consumer").
        fatal: raise from :meth:`run`, instead of retrying, an error retrying cannot cure
            (refused credentials or certificate before the first connection; a refused
            set-up at any time, unless the queue is only still starting). Consumers want
            that; a publisher never raises.
        on_open: called with each new connection, once it is set up.
        status: the state to keep up to date (default: a new one); several keepers that
            take turns for one view (a history probe, then the receiver) share one.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        what: str,
        fatal: bool = False,
        on_open: Callable[[C], None] | None = None,
        status: Status | None = None,
    ) -> None:
        self.settings = settings
        self.what = what
        self.fatal = fatal
        self.on_open = on_open
        self.conn: C | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0  # connections re-established after a loss
        self.status = status if status is not None else Status(what)
        self.status.what = what
        if not self.status.since:  # (a status shared with an earlier keeper keeps its time)
            self.status.since = time.time()
        self.ever_connected = False  # this keeper's own (a shared status may say more)
        self._stopped = asyncio.Event()

    @property
    def attempts(self) -> int:
        """Failed attempts since the last success."""
        return self.status.attempts

    @property
    def last_error(self) -> BaseException | None:
        """Why the last attempt failed."""
        error = self.status.error
        return error if isinstance(error, BaseException) else None

    async def dial(self, url: str) -> C:
        """Connect to ``url`` and set the connection up, within ``connect_timeout``.

        Raises what :func:`classify` maps: AuthenticationError, BrokerError (with the reply
        code), ssl.SSLCertVerificationError, OSError, TimeoutError, EOFError.
        """
        raise NotImplementedError

    async def until_lost(self, conn: C) -> object:
        """Return once ``conn`` is gone; the value says why (for the log)."""
        raise NotImplementedError

    async def hang_up(self, conn: C, timeout: float) -> None:
        """Close ``conn`` politely, within ``timeout``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop reconnecting; :meth:`run` returns once the current wait ends."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    async def run(self) -> None:
        """Keep a connection until :meth:`stop` (or cancellation).

        Raises:
            AuthenticationError, UntrustedCertificate, BrokerError: only with ``fatal``.
        """
        settings = self.settings
        delay = settings.reconnect_min
        while not self._stopped.is_set():
            found = await self._connect_any()
            if found is None:
                await self._wait(random.uniform(delay / 2, delay))
                delay = min(delay * 2, settings.reconnect_max)
                continue
            _, conn = found
            delay = settings.reconnect_min
            if self.ever_connected:
                self.reconnects += 1
            self.ever_connected = True
            self._move(Phase.CONNECTED)
            self.conn = conn
            self.connected.set()
            if self.on_open is not None:
                self.on_open(conn)
            stopping = asyncio.ensure_future(self._stopped.wait())
            lost = asyncio.ensure_future(self.until_lost(conn))
            try:
                await asyncio.wait({stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not lost.done():
                    lost.cancel()
                self.connected.clear()
            if self._stopped.is_set():
                return
            self.status.error = str(lost.result())
            self._move(Phase.LOST)
            await self._wait(random.uniform(delay / 2, delay))

    async def close(self, timeout: float) -> None:
        """Stop reconnecting and close the current connection politely."""
        self.stop()
        self.status.move(Phase.STOPPED, time.time())  # (asked for: no log line)
        conn, self.conn = self.conn, None
        if conn is not None:
            await self.hang_up(conn, timeout)

    async def _wait(self, seconds: float) -> None:
        """Sleep until the next attempt (or :meth:`stop`), saying when it will be."""
        self.status.retry_at = time.time() + seconds
        await self._sleep(seconds)
        self.status.retry_at = None

    def _move(self, phase: Phase) -> None:
        """Enter ``phase``; a change is worth one log line (an attempt is not)."""
        status = self.status
        trouble = status.phase not in (Phase.CONNECTING, Phase.CONNECTED)
        attempts = status.attempts
        if not status.move(phase, time.time()):
            return
        if phase is Phase.CONNECTED:
            if trouble:  # a recovery: said as loudly as the trouble was
                log.warning("%s after %d failed attempts", status.headline(), attempts)
            else:
                log.info("%s", status.headline())
        elif phase is Phase.LOST:
            log.warning("%s; reconnecting", status.headline())
        elif phase in (Phase.REFUSED, Phase.UNTRUSTED):
            log.error("%s; retrying", status.headline())
        elif phase is Phase.UNREACHABLE:
            log.warning("%s; retrying", status.headline())

    async def _sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stopped.wait()
        except TimeoutError:
            pass

    async def _connect_any(self) -> tuple[str, C] | None:
        for url in self.settings.urls:
            if self._stopped.is_set():
                return None
            self.status.trying(url)
            try:
                conn = await self.dial(url)
            except (OSError, TimeoutError, EOFError, BrokerError) as exc:
                self._failed(url, exc)
                continue
            return url, conn
        return None

    def _failed(self, url: str, exc: BaseException) -> None:
        shown, fatal = classify(url, exc)
        if self.fatal and fatal:
            if isinstance(shown, BrokerError) and not isinstance(shown, AuthenticationError):
                raise BrokerError(
                    f"broker refused the {self.what}'s set-up: {shown}", shown.code
                ) from exc
            if not self.ever_connected:  # wrong credentials or CA: say so, do not retry
                self.status.error = shown  # (the caller says it: no log line here)
                self.status.move(phase_of(shown), time.time())
                raise shown from (None if shown is exc else exc)
        self.status.error = shown
        self.status.attempts += 1
        self._move(phase_of(shown))


class Link(Keeper[Connection]):
    """Keeps one of the core's own connections open (the publisher's pool, the receiver).

    Args:
        settings, what, fatal, on_open, status: see :class:`Keeper`.
        name: the connection name the broker shows.
        callbacks: receives the connection's events.
        setup: run on every new connection before it counts as connected.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        callbacks: ConnectionCallbacks,
        setup: Setup,
        what: str,
        fatal: bool = False,
        on_open: Callable[[Connection], None] | None = None,
        status: Status | None = None,
    ) -> None:
        super().__init__(settings, what=what, fatal=fatal, on_open=on_open, status=status)
        self.name = name
        self.callbacks = callbacks
        self.setup = setup

    async def dial(self, url: str) -> Connection:
        return await open_connection(
            url, self.settings, name=self.name, callbacks=self.callbacks, setup=self.setup
        )

    async def until_lost(self, conn: Connection) -> object:
        await conn.wait_closed()
        return conn.error or "closed"

    async def hang_up(self, conn: Connection, timeout: float) -> None:
        await conn.close(timeout)
