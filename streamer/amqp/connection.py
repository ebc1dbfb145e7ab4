"""One AMQP 0-9-1 connection, both directions: confirms and deliveries parsed by hand.

Why not aiormq here: its ``basic_publish`` takes a lock, builds a future and writes once per
message, and on the receiving side it parses every property table and starts a task per
delivery (about 50 µs of CPU each, more than publishing one report costs). Keeping up with the
broker needs batched writes, cheap confirm accounting and deliveries read straight from the
frames. So this protocol reads ``basic.ack``/``basic.nack`` and the three frames of a
``basic.deliver`` itself, and hands every other frame to pamqp. The fedora-messaging-style
``consume()`` API, which needs every property and one callback per message, stays on aiormq.

A delivery is handed over as a plain tuple ``(delivery_tag, routing_key, content_type,
body)``: all the receiving tools need, with one small allocation per message. The deliveries
of one socket read arrive in one list, so a consumer folds (and acknowledges) in batches.
On a stream queue's channel the reader also notes each message's ``x-stream-offset`` header
(:meth:`Connection.stream_offset`), so a reader can resume after the last one it handled.

Over 500 lines because it is one ``asyncio.Protocol``: the frame reader, the handshake and
the channel methods share the connection's state, and the reader is the hot path of both
directions.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import platform
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast

from pamqp import commands, frame, heartbeat
from pamqp.base import Frame
from pamqp.header import ProtocolHeader

from .._version import __version__
from ..errors import AuthenticationError, BrokerError
from ..settings import mask_url

__all__ = ["Connection", "ConnectionCallbacks", "Delivery", "State", "client_properties"]

log = logging.getLogger(__name__)

#: ``(delivery_tag, routing_key, content_type, body)``; content_type is "" when not set.
Delivery = tuple[int, str, str, bytes]

_FRAME_HDR: Final = struct.Struct(">BHI")
_ACK_BODY: Final = struct.Struct(">HHQB")  # class, method, delivery tag, bits
_U64: Final = struct.Struct(">Q")
_U32: Final = struct.Struct(">I")
_INTEGERS: Final = {
    ord(tag): struct.Struct(fmt)
    for tag, fmt in (
        ("b", ">b"), ("B", ">B"), ("s", ">h"), ("u", ">H"), ("I", ">i"), ("i", ">I"),
        ("l", ">q"), ("L", ">Q"),
    )
}  # fmt: skip
_STREAM_OFFSET: Final = b"x-stream-offset"
# Sizes of the fixed-size AMQP field-table values, by type tag (RabbitMQ's dialect); the
# others ('S', 'x', 'F', 'A') carry a 4-byte length.
_FIELD_SIZES: Final = {
    ord(tag): size
    for tag, size in (
        ("t", 1), ("b", 1), ("B", 1), ("s", 2), ("u", 2), ("I", 4), ("i", 4),
        ("l", 8), ("L", 8), ("f", 4), ("d", 8), ("D", 5), ("T", 8), ("V", 0),
    )
}  # fmt: skip
_HEARTBEAT: Final = frame.marshal(heartbeat.Heartbeat(), 0)
_FRAME_MAX: Final = 131072
_ACCESS_REFUSED: Final = 403
_DELIVER: Final = b"\x00\x3c\x00\x3c"  # class 60 (basic), method 60 (deliver)
_GATHER_BELOW: Final = 128 * 1024  # reads this large already carry many deliveries
# basic.ack as the client sends it: frame header, class 60 method 80, tag, multiple bit.
_CLIENT_ACK: Final = struct.Struct(">BHIHHQBB")


class State(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ConnectionCallbacks:
    """What a connection reports to its owner. Override what you need."""

    def on_confirm(self, channel: int, tag: int, multiple: bool, ok: bool) -> None:
        """The broker acked (``ok``) or nacked publishes up to/at ``tag`` on ``channel``."""

    def on_return(self, channel: int) -> None:
        """The broker returned one unroutable publish on ``channel``."""

    def on_deliveries(self, channel: int, deliveries: list[Delivery]) -> None:
        """Complete messages delivered on ``channel``, in order (one list per socket read)."""

    def on_cancel(self, channel: int) -> None:
        """The broker cancelled a consumer on ``channel`` (its queue was deleted)."""

    def on_blocked(self, blocked: bool) -> None:
        """The broker blocked (resource alarm) or unblocked the connection."""

    def on_writable(self) -> None:
        """The transport drained its write buffer after pushing back."""

    def on_lost(self, exc: BaseException | None) -> None:
        """The connection is gone (after it was open); ``exc`` says why, if known."""


class _Incoming:
    """The message being read on one consuming channel (its deliver, then header, then body
    frames), and the messages of this read already complete."""

    __slots__ = (
        "channel",
        "content_type",
        "done",
        "key",
        "offset",
        "parts",
        "reading",
        "remaining",
        "stream",
        "tag",
    )

    def __init__(self, channel: int, stream: bool = False) -> None:
        self.channel = channel
        self.done: list[Delivery] = []
        self.tag = 0
        self.key = ""
        self.content_type = ""
        self.remaining = -1  # body bytes still to come; -1: waiting for the header
        self.parts: list[bytes] = []
        self.stream = stream  # a stream queue's channel: note x-stream-offset
        # Where the content header of the message being read, and of the last complete one,
        # are: (the read's bytes, the frame's start). Their offset is parsed only when asked
        # for (once per batch, not per message).
        self.reading: tuple[bytes, int] | None = None
        self.offset: tuple[bytes, int] | None = None


class Connection(asyncio.Protocol):
    """An AMQP connection: log in, open channels, publish with confirms, consume.

    Create it with :func:`streamer.amqp.open_connection`. Publishing is ``write(bytes)`` of
    frames built by :class:`~streamer.frames.Framer`; confirms and deliveries arrive through
    the callbacks.
    """

    def __init__(self, url: str, name: str, heartbeat: int, callbacks: ConnectionCallbacks) -> None:
        self.url = url
        self.name = name
        self.state = State.CONNECTING
        self.blocked = False
        self.writable = True
        self.frame_max = _FRAME_MAX
        self.channel_max = 65535
        self.heartbeat = heartbeat
        self._callbacks = callbacks
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._rest = b""  # the start of a frame the last read ended in
        self._waiters: dict[int, asyncio.Future[Frame]] = {}
        self._early: dict[int, deque[Frame]] = {}
        self._incoming: dict[int, _Incoming] = {}  # consuming channels
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._error: BaseException | None = None
        self._last_rx = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        #: Seconds to let deliveries pile up in the socket after a small read (0: read at
        #: once). See :meth:`gather_reads`.
        self.read_pause = 0.0
        self._resume: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(ProtocolHeader().marshal())

    def gather_reads(self, pause: float) -> None:
        """After each read smaller than a full buffer, stop reading for ``pause`` seconds.

        A broker delivering to a consumer on the same machine as a busy publisher sends a
        message or two per segment; reading each costs a wake-up and a system call, more CPU
        than folding the report. Letting them pile up in the socket for a few milliseconds
        turns hundreds of small reads into one. For views that redraw a few times a second;
        the kernel's receive buffer (and TCP flow control beyond it) holds what arrives.
        """
        self.read_pause = pause

    def _resume_reading(self) -> None:
        self._resume = None
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.read_pause and len(data) < _GATHER_BELOW and self._transport is not None:
            self._transport.pause_reading()
            self._resume = self._loop.call_later(self.read_pause, self._resume_reading)
        self._last_rx = self._loop.time()
        # Frames are parsed in the read itself (bytes), so a body is copied out of it once;
        # only the unfinished frame at its end is kept for the next read.
        buf = self._rest + data if self._rest else data
        pos, end = 0, len(buf)
        unpack = _FRAME_HDR.unpack_from
        incoming = self._incoming
        got: list[_Incoming] | None = None  # channels with complete deliveries in this read
        while end - pos >= 8:
            kind, channel, size = unpack(buf, pos)
            stop = pos + 7 + size
            if stop >= end:
                break
            msg = incoming.get(channel) if incoming else None
            if msg is None:
                self._control(kind, channel, size, buf, pos, stop)
            elif kind == 3:  # a body frame of a delivery
                msg.parts.append(buf[pos + 7 : stop])
                msg.remaining -= size
                if msg.remaining <= 0:
                    parts = msg.parts
                    body = parts[0] if len(parts) == 1 else b"".join(parts)
                    msg.parts = []
                    msg.remaining = -1
                    if msg.stream:
                        msg.offset = msg.reading
                    if not msg.done:
                        got = got or []
                        got.append(msg)
                    msg.done.append((msg.tag, msg.key, msg.content_type, body))
            elif kind == 2:  # its content header: class, weight, body size, flags, props
                body_size = _U64.unpack_from(buf, pos + 11)[0]
                if buf[pos + 19] & 0x80:  # content_type is set: the first property
                    length = buf[pos + 21]
                    msg.content_type = buf[pos + 22 : pos + 22 + length].decode("latin-1")
                else:
                    msg.content_type = ""
                if msg.stream:
                    msg.reading = (buf, pos)
                if body_size:
                    msg.remaining = body_size
                else:
                    if not msg.done:
                        got = got or []
                        got.append(msg)
                    msg.done.append((msg.tag, msg.key, msg.content_type, b""))
                    if msg.stream:
                        msg.offset = msg.reading
            elif kind == 1 and buf[pos + 7 : pos + 11] == _DELIVER:
                at = pos + 12 + buf[pos + 11]  # past the consumer tag
                msg.tag = _U64.unpack_from(buf, at)[0]
                at += 10 + buf[at + 9]  # past the tag, redelivered and the exchange
                msg.key = buf[at + 1 : at + 1 + buf[at]].decode("utf-8", "replace")
                # The common case, read in one step: its header and its one body frame are
                # complete in this read too (otherwise the frames are taken one by one).
                head = stop + 1
                if end - head >= 8:
                    hkind, _, hsize = unpack(buf, head)
                    body = head + 8 + hsize  # the body frame's start
                    if hkind == 2 and end - body >= 8:
                        bkind, _, bsize = unpack(buf, body)
                        stop = body + 7 + bsize
                        if (
                            bkind == 3
                            and stop < end
                            and bsize == _U64.unpack_from(buf, head + 11)[0]
                        ):
                            if buf[head + 19] & 0x80:  # content_type is set
                                at = head + 22 + buf[head + 21]
                                content_type = buf[head + 22 : at].decode("latin-1")
                            else:
                                content_type = ""
                            if not msg.done:
                                got = got or []
                                got.append(msg)
                            msg.done.append((msg.tag, msg.key, content_type, buf[body + 7 : stop]))
                            if msg.stream:
                                msg.offset = (buf, head)
                        else:
                            stop = head - 1
                    # else: as before, the header frame is read by the loop's next turn
            else:
                self._control(kind, channel, size, buf, pos, stop)
            pos = stop + 1
        self._rest = buf[pos:] if pos < end else b""
        if got is not None:
            on_deliveries = self._callbacks.on_deliveries
            for msg in got:
                done, msg.done = msg.done, []
                on_deliveries(msg.channel, done)

    def _control(self, kind: int, channel: int, size: int, buf: bytes, pos: int, stop: int) -> None:
        """A frame that is not part of a delivery: a confirm (read here), or for pamqp."""
        if kind == 1 and size == 13:  # basic.ack / basic.nack are 13-byte methods
            cls, meth, tag, bits = _ACK_BODY.unpack_from(buf, pos + 7)
            if cls == 60 and (meth == 80 or meth == 120):
                self._callbacks.on_confirm(channel, tag, bool(bits & 1), meth == 80)
                return
        if kind == 1 or kind == 8:
            self._dispatch(channel, buf[pos : stop + 1])
        # Other content frames only follow basic.return here; nothing to read in them.

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
        if self._resume is not None:
            self._resume.cancel()
        error = self._error or exc or ConnectionResetError("connection closed by the broker")
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()
        if not self._closed.done():
            self._closed.set_result(None)
        if was_open:
            self._callbacks.on_lost(error)

    # -- frames other than confirms and deliveries ------------------------------------------

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
        elif isinstance(value, commands.Basic.Cancel):
            self._incoming.pop(channel, None)
            self._callbacks.on_cancel(channel)
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
            self._fail(_reply_error(value, "connection", self.url))
        elif isinstance(value, commands.Channel.Close):
            # Channels only close on errors we cannot repair in place (e.g. the exchange was
            # deleted, a queue declared with other arguments); reconnecting re-declares.
            self._send(commands.Channel.CloseOk(), channel)
            self._incoming.pop(channel, None)
            err = _reply_error(value, f"channel {channel}", self.url)
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

    async def call(self, value: Frame | None, channel: int) -> Frame:
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

    async def handshake(
        self, client_properties: dict[str, Any], mechanism: str, response: str, vhost: str
    ) -> None:
        """Log in (``PLAIN`` or ``EXTERNAL``), tune and open the vhost."""
        start = await self.call(None, 0)
        if not isinstance(start, commands.Connection.Start):
            raise BrokerError(f"expected connection.start, got {start.name}")
        offered = (start.mechanisms or "").split()
        if mechanism not in offered:
            hint = (
                " (enable the rabbitmq_auth_mechanism_ssl plugin for client certificates)"
                if mechanism == "EXTERNAL"
                else ""
            )
            raise AuthenticationError(
                f"broker at {mask_url(self.url)} does not offer {mechanism} authentication; "
                f"it offers {', '.join(offered) or 'nothing'}{hint}",
                _ACCESS_REFUSED,
            )
        tune = await self.call(
            commands.Connection.StartOk(
                client_properties=client_properties,
                mechanism=mechanism,
                response=response,
                locale="en_US",
            ),
            0,
        )
        if not isinstance(tune, commands.Connection.Tune):
            raise BrokerError(f"expected connection.tune, got {tune.name}")
        self.frame_max = min(tune.frame_max or _FRAME_MAX, _FRAME_MAX)
        self.channel_max = min(tune.channel_max or 65535, 65535)
        self._send(
            commands.Connection.TuneOk(
                channel_max=self.channel_max,
                frame_max=self.frame_max,
                heartbeat=self.heartbeat,
            ),
            0,
        )
        await self.call(commands.Connection.Open(virtual_host=vhost), 0)

    async def open_channel(self, channel: int, *, confirm: bool = False) -> None:
        """Open ``channel`` (in confirm mode with ``confirm``)."""
        if channel > self.channel_max:
            raise BrokerError(f"broker allows {self.channel_max} channels, {channel} requested")
        await self.call(commands.Channel.Open(), channel)
        if confirm:
            await self.call(commands.Confirm.Select(), channel)

    def opened(self) -> None:
        """Mark the connection usable: from now on its loss is reported and heartbeats run."""
        self.state = State.OPEN
        if self.heartbeat:
            self._timer = self._loop.call_later(self.heartbeat / 2, self._beat)

    async def declare_exchange(self, channel: int, exchange: str, *, confirm: bool) -> None:
        """Make sure the topic ``exchange`` exists, creating it (durable) if missing.

        A passive declare first, so an exchange someone created with other flags is used
        as it is instead of failing with 406 (the 404 of a missing one closes the channel,
        which is then opened again).
        """
        if exchange.startswith("amq."):
            return
        try:
            await self.call(commands.Exchange.Declare(exchange=exchange, passive=True), channel)
            return
        except BrokerError as exc:
            if exc.code != 404:
                raise
        await self.open_channel(channel, confirm=confirm)
        await self.call(
            commands.Exchange.Declare(exchange=exchange, exchange_type="topic", durable=True),
            channel,
        )
        log.info("declared topic exchange %r", exchange)

    async def declare_queue(
        self,
        channel: int,
        name: str,
        *,
        durable: bool,
        auto_delete: bool,
        exclusive: bool,
        arguments: dict[str, Any],
    ) -> str:
        """Declare a queue; returns its name (the broker's for an anonymous one)."""
        ok = await self.call(
            commands.Queue.Declare(
                queue=name,
                durable=durable,
                auto_delete=auto_delete,
                exclusive=exclusive,
                arguments=arguments,
            ),
            channel,
        )
        assert isinstance(ok, commands.Queue.DeclareOk)
        return ok.queue or name

    async def check_queue(self, channel: int, name: str) -> None:
        """Make sure queue ``name`` exists without declaring it (a passive declare).

        Raises:
            BrokerError: code 404 when it does not (the channel is closed then).
        """
        await self.call(commands.Queue.Declare(queue=name, passive=True), channel)

    async def delete_queue(self, channel: int, name: str) -> int:
        """Delete queue ``name``; returns the messages it held (0 when it did not exist)."""
        ok = await self.call(commands.Queue.Delete(queue=name), channel)
        assert isinstance(ok, commands.Queue.DeleteOk)
        return int(ok.message_count or 0)

    async def bind(self, channel: int, queue: str, exchange: str, key: str) -> None:
        await self.call(
            commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=key), channel
        )

    async def consume(
        self,
        channel: int,
        queue: str,
        *,
        prefetch: int,
        no_ack: bool,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """Start delivering ``queue`` on ``channel`` (``prefetch`` unacknowledged at most)."""
        await self.call(commands.Basic.Qos(prefetch_count=min(prefetch, 65535)), channel)
        # Deliveries may follow consume-ok at once: be ready for them.
        self._incoming[channel] = _Incoming(channel, stream="x-stream-offset" in (arguments or {}))
        try:
            await self.call(
                commands.Basic.Consume(queue=queue, no_ack=no_ack, arguments=arguments or {}),
                channel,
            )
        except BaseException:
            self._incoming.pop(channel, None)
            raise

    def stream_offset(self, channel: int) -> int:
        """The ``x-stream-offset`` of the last complete delivery on ``channel`` (-1: none yet,
        or the channel does not consume a stream)."""
        msg = self._incoming.get(channel)
        if msg is None or msg.offset is None:
            return -1
        return _stream_offset(*msg.offset)

    def ack(self, channel: int, tag: int, *, multiple: bool = True) -> None:
        """Acknowledge delivery ``tag`` (and, with ``multiple``, every one before it)."""
        self.write(_CLIENT_ACK.pack(1, channel, 13, 60, 80, tag, multiple, 0xCE))

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
    def error(self) -> BaseException | None:
        """Why the connection failed, when the broker or a check said so."""
        return self._error

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport


def _stream_offset(buf: bytes, head: int) -> int:
    """The ``x-stream-offset`` header of the content header frame at ``head`` (-1: none).

    Only the properties before the header table are skipped and only the table is walked:
    a stream delivery's offset is all a reader needs from its properties.
    """
    flags = buf[head + 19]
    at = head + 21
    if flags & 0x80:  # content_type
        at += 1 + buf[at]
    if flags & 0x40:  # content_encoding
        at += 1 + buf[at]
    if not flags & 0x20:  # no headers
        return -1
    stop = at + 4 + _U32.unpack_from(buf, at)[0]
    at += 4
    sizes = _FIELD_SIZES
    while at < stop:
        length = buf[at]
        key = buf[at + 1 : at + 1 + length]
        at += 1 + length
        tag = buf[at]
        at += 1
        if key == _STREAM_OFFSET and tag in _INTEGERS:  # RabbitMQ sends 'l' (signed 64-bit)
            return int(_INTEGERS[tag].unpack_from(buf, at)[0])
        size = sizes.get(tag)
        at += size if size is not None else 4 + _U32.unpack_from(buf, at)[0]
    return -1


def _reply_error(
    value: commands.Connection.Close | commands.Channel.Close, what: str, url: str
) -> BrokerError:
    if value.reply_code == _ACCESS_REFUSED and what == "connection":
        # Worded as the consumer's (aiormq) path words it: one message for every command.
        text = f"broker at {mask_url(url)} refused the credentials: {value.reply_text}"
        return AuthenticationError(text, value.reply_code)
    return BrokerError(f"broker closed the {what}: {value.reply_code} {value.reply_text}",
                       value.reply_code or 0)  # fmt: skip


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


Factory = Callable[[str, str, int, ConnectionCallbacks], Connection]
