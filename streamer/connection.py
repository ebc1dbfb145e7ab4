"""One AMQP 0-9-1 connection for publishing: handshake, channels, confirms, heartbeats.

Why not aiormq here: its ``basic_publish`` takes a lock, builds a future and writes once per
message, and its confirm bookkeeping is per message too. A publisher that should keep up with
the broker needs batched writes and cheap confirm accounting, so this protocol parses
``basic.ack``/``basic.nack`` itself and hands everything else to pamqp. Consumers, which are
not on a hot path, use aiormq.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import platform
import ssl
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

from pamqp import commands, frame, heartbeat
from pamqp.base import Frame
from pamqp.header import ProtocolHeader

from ._version import __version__
from .errors import AuthenticationError, BrokerError
from .settings import mask_url

__all__ = ["Connection", "ConnectionCallbacks", "open_connection"]

log = logging.getLogger(__name__)

_FRAME_HDR: Final = struct.Struct(">BHI")
_ACK_BODY: Final = struct.Struct(">HHQB")  # class, method, delivery tag, bits
_HEARTBEAT: Final = frame.marshal(heartbeat.Heartbeat(), 0)
_FRAME_MAX: Final = 131072
_ACCESS_REFUSED: Final = 403


class State(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ConnectionCallbacks:
    """What a connection reports to its owner (the pool). Override what you need."""

    def on_confirm(self, channel: int, tag: int, multiple: bool, ok: bool) -> None:
        """The broker acked (``ok``) or nacked publishes up to/at ``tag`` on ``channel``."""

    def on_return(self, channel: int) -> None:
        """The broker returned one unroutable publish on ``channel``."""

    def on_blocked(self, blocked: bool) -> None:
        """The broker blocked (resource alarm) or unblocked the connection."""

    def on_writable(self) -> None:
        """The transport drained its write buffer after pushing back."""

    def on_lost(self, exc: BaseException | None) -> None:
        """The connection is gone (after it was open); ``exc`` says why, if known."""


class Connection(asyncio.Protocol):
    """An AMQP connection whose channels are all in confirm mode.

    Create it with :func:`open_connection`. Publishing is ``write(bytes)`` of frames built by
    :class:`~streamer.frames.Framer`; confirms arrive through the callbacks.
    """

    def __init__(self, url: str, name: str, heartbeat: int, callbacks: ConnectionCallbacks) -> None:
        self.url = url
        self.name = name
        self.state = State.CONNECTING
        self.blocked = False
        self.writable = True
        self.frame_max = _FRAME_MAX
        self.heartbeat = heartbeat
        self._callbacks = callbacks
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiters: dict[int, asyncio.Future[Frame]] = {}
        self._early: dict[int, deque[Frame]] = {}
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._error: BaseException | None = None
        self._last_rx = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(ProtocolHeader().marshal())

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        buf = self._buffer
        buf += data
        pos, end = 0, len(buf)
        on_confirm = self._callbacks.on_confirm
        while end - pos >= 8:
            kind, channel, size = _FRAME_HDR.unpack_from(buf, pos)
            stop = pos + 7 + size
            if stop >= end:
                break
            if kind == 1 and size == 13:  # basic.ack / basic.nack are 13-byte methods
                cls, meth, tag, bits = _ACK_BODY.unpack_from(buf, pos + 7)
                if cls == 60 and (meth == 80 or meth == 120):
                    on_confirm(channel, tag, bool(bits & 1), meth == 80)
                    pos = stop + 1
                    continue
            if kind in (1, 8):
                self._dispatch(channel, bytes(buf[pos : stop + 1]))
            # Content frames (type 2, 3) only follow basic.return here; nothing to read in them.
            pos = stop + 1
        del buf[:pos]

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._callbacks.on_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.state is State.OPEN
        self.state = State.CLOSED
        self.writable = False
        if self._timer is not None:
            self._timer.cancel()
        error = self._error or exc or ConnectionResetError("connection closed by the broker")
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()
        if not self._closed.done():
            self._closed.set_result(None)
        if was_open:
            self._callbacks.on_lost(error)

    # -- frames other than confirms ---------------------------------------------------------

    def _dispatch(self, channel: int, raw: bytes) -> None:
        try:
            _, _, value = frame.unmarshal(raw)
        except Exception as exc:  # a broken peer; nothing sensible to continue with
            self._fail(BrokerError(f"unparsable frame from the broker: {exc}"))
            return
        if isinstance(value, heartbeat.Heartbeat):
            return
        if isinstance(value, commands.Basic.Return):
            self._callbacks.on_return(channel)
        elif isinstance(value, commands.Connection.Blocked):
            log.warning("broker blocked %s: %s", mask_url(self.url), value.reason)
            self.blocked = True
            self._callbacks.on_blocked(True)
        elif isinstance(value, commands.Connection.Unblocked):
            log.info("broker unblocked %s", mask_url(self.url))
            self.blocked = False
            self._callbacks.on_blocked(False)
        elif isinstance(value, commands.Connection.Close):
            self._send(commands.Connection.CloseOk(), 0)
            self._fail(_reply_error(value, "connection"))
        elif isinstance(value, commands.Channel.Close):
            # Publishing channels only close on errors we cannot repair in place (e.g. the
            # exchange was deleted); reconnecting re-declares everything.
            self._send(commands.Channel.CloseOk(), channel)
            err = _reply_error(value, f"channel {channel}")
            waiter = self._waiters.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(err)
            elif self.state is State.OPEN:
                self._fail(err)
        elif isinstance(value, commands.Connection.CloseOk):
            if self._transport is not None:
                self._transport.close()
        elif isinstance(value, Frame):
            waiter = self._waiters.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(value)
            else:
                # A reply can beat its waiter: Connection.Start arrives as soon as the socket
                # is up, possibly before handshake() asked for it. Keep it for _call().
                self._early.setdefault(channel, deque()).append(value)

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        if self._transport is not None:
            self._transport.abort()

    def _send(self, value: Frame, channel: int) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame.marshal(value, channel))

    async def _call(self, value: Frame | None, channel: int) -> Frame:
        """Send ``value`` (if any) and wait for the next method frame on ``channel``."""
        if self.state is State.CLOSED:
            raise self._error or ConnectionResetError("connection closed")
        if value is not None:
            self._send(value, channel)
        early = self._early.get(channel)
        if early:
            return early.popleft()
        waiter = self._loop.create_future()
        self._waiters[channel] = waiter
        result: Frame = await waiter
        return result

    # -- lifecycle --------------------------------------------------------------------------

    async def handshake(self, channels: int, client_properties: dict[str, Any]) -> None:
        """Log in, tune, open the vhost and ``channels`` confirm-mode channels."""
        parts = urlsplit(self.url)
        start = await self._call(None, 0)
        if not isinstance(start, commands.Connection.Start):
            raise BrokerError(f"expected connection.start, got {start.name}")
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        tune = await self._call(
            commands.Connection.StartOk(
                client_properties=client_properties,
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
                locale="en_US",
            ),
            0,
        )
        if not isinstance(tune, commands.Connection.Tune):
            raise BrokerError(f"expected connection.tune, got {tune.name}")
        self.frame_max = min(tune.frame_max or _FRAME_MAX, _FRAME_MAX)
        channel_max = min(tune.channel_max or 65535, 65535)
        if channels > channel_max:
            raise BrokerError(f"broker allows {channel_max} channels, {channels} requested")
        self._send(
            commands.Connection.TuneOk(
                channel_max=channel_max,
                frame_max=self.frame_max,
                heartbeat=self.heartbeat,
            ),
            0,
        )
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        await self._call(commands.Connection.Open(virtual_host=vhost), 0)
        for channel in range(1, channels + 1):
            await self._call(commands.Channel.Open(), channel)
            await self._call(commands.Confirm.Select(), channel)

    def opened(self) -> None:
        """Mark the connection usable: from now on its loss is reported and heartbeats run."""
        self.state = State.OPEN
        if self.heartbeat:
            self._timer = self._loop.call_later(self.heartbeat / 2, self._beat)

    async def declare_exchange(self, channel: int, exchange: str) -> None:
        """Make sure the topic ``exchange`` exists, creating it (durable) if missing.

        A passive declare first, so an exchange someone created with other flags is used
        as it is instead of failing with 406.
        """
        if exchange.startswith("amq."):
            return
        try:
            await self._call(commands.Exchange.Declare(exchange=exchange, passive=True), channel)
            return
        except BrokerError as exc:
            if exc.code != 404:
                raise
        await self._call(commands.Channel.Open(), channel)
        await self._call(commands.Confirm.Select(), channel)
        await self._call(
            commands.Exchange.Declare(
                exchange=exchange,
                exchange_type="topic",
                durable=True,
            ),
            channel,
        )
        log.info("declared topic exchange %r", exchange)

    def _beat(self) -> None:
        """Send a heartbeat every half interval; drop a peer silent for two intervals.

        The next check is due when the silence would reach two intervals, if that comes
        before the next heartbeat, so a dead link is noticed at two intervals, not up to
        half an interval later.
        """
        if self.state is not State.OPEN or self._transport is None:
            return
        silent = self._loop.time() - self._last_rx
        limit = 2 * self.heartbeat
        if silent >= limit:
            log.warning(
                "no data from %s for %.1f s; treating the connection as dead",
                mask_url(self.url),
                silent,
            )
            self._fail(ConnectionResetError(f"heartbeat missed for {silent:.1f} s"))
            return
        self._transport.write(_HEARTBEAT)
        self._timer = self._loop.call_later(min(self.heartbeat / 2, limit - silent), self._beat)

    def write(self, data: bytes) -> None:
        """Queue bytes on the socket; never waits (flow control is ``writable``).

        A connection that is already going away takes nothing: what was meant for it stays
        unconfirmed and is counted as dropped when the loss is reported.
        """
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    async def close(self, timeout: float = 2.0) -> None:
        """Close politely (connection.close, wait for close-ok), then the socket. Idempotent."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSING
        if self._timer is not None:
            self._timer.cancel()
        self._send(
            commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0), 0
        )
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._closed)
        except TimeoutError:
            pass
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Drop the socket without a word (used after a fork and when closing times out)."""
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        """Return once the connection is gone, for whatever reason."""
        await asyncio.shield(self._closed)

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport


def _reply_error(
    value: commands.Connection.Close | commands.Channel.Close, what: str
) -> BrokerError:
    text = f"broker closed the {what}: {value.reply_code} {value.reply_text}"
    if value.reply_code == _ACCESS_REFUSED and what == "connection":
        return AuthenticationError(text, value.reply_code)
    return BrokerError(text, value.reply_code or 0)


def client_properties(name: str) -> dict[str, Any]:
    """What we tell the broker about ourselves (shown in its management views)."""
    return {
        "product": "streamer",
        "version": __version__,
        "platform": f"Python {platform.python_version()}",
        "connection_name": name,
        "capabilities": {
            "publisher_confirms": True,
            "connection.blocked": True,
            "authentication_failure_close": True,
            "consumer_cancel_notify": True,
            "basic.nack": True,
        },
    }


async def open_connection(
    url: str,
    *,
    name: str,
    channels: int,
    heartbeat: int,
    timeout: float,
    callbacks: ConnectionCallbacks,
    ca_file: str | None = None,
    exchange: str | None = None,
    factory: Callable[..., Connection] = Connection,
) -> Connection:
    """Connect, log in, open ``channels`` confirm-mode channels and make sure ``exchange``
    exists (on channel 1), all within ``timeout``.

    Raises:
        AuthenticationError: the broker refused the credentials.
        BrokerError: the broker refused something else.
        OSError, TimeoutError: nothing usable answered at ``url``.
    """
    parts = urlsplit(url)
    tls: ssl.SSLContext | None = None
    if parts.scheme == "amqps":
        tls = ssl.create_default_context(cafile=ca_file)
    port = parts.port or (5671 if tls else 5672)
    loop = asyncio.get_running_loop()
    conn: Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(
                lambda: factory(url, name, heartbeat, callbacks),
                parts.hostname or "localhost",
                port,
                ssl=tls,
                server_hostname=parts.hostname if tls else None,
            )
            await conn.handshake(channels, client_properties(name))
            if exchange is not None:
                await conn.declare_exchange(1, exchange)
        conn.opened()
    except BaseException:
        if conn is not None:
            conn.abandon()
        raise
    return conn
