"""Receiving side: subscribe to task reports with AMQP topic bindings.

Consumers are not on the hot path, so they use aiormq as it is. :func:`consume`,
:class:`Consumer` and :func:`subscribe` follow fedora-messaging's consumer API (a callback per
decoded report, ``Nack``/``Drop``/``HaltConsumer``), reconnect and resume by themselves after
a broker restart, and by default consume from an exclusive, auto-deleted, length-capped queue
(a slow listener never makes the broker hoard messages: the oldest are dropped instead).
``streamer listen``, ``watch`` and ``demo`` are built on it. See docs/consumers.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiormq
import aiormq.abc
import aiormq.exceptions

from .amqp import Keeper, Status
from .callback import Outcome, Verdict, dispatch, resolve_callback
from .errors import (
    AuthenticationError,
    BrokerError,
    CallbackError,
    ConfigError,
)
from .message import MALFORMED, Malformed, Message, classify
from .settings import Settings, load_settings, mask_url
from .topology import plan

# Message, classify and MALFORMED are re-exported: they are the consumer API's vocabulary.
__all__ = [
    "COUNTERS",
    "MALFORMED",
    "Consumer",
    "Message",
    "classify",
    "consume",
    "subscribe",
]

log = logging.getLogger(__name__)


class _Reported(logging.Filter):
    """Drops aiormq's per-attempt ERROR line ("error when creating transport"): the failure
    reaches our reconnect loop, which logs one line per change of state, not per attempt;
    with aiormq's line as well, a refused broker wrote over 80 log lines a minute."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_Reported())


#: What happened to messages that reached the callback, and to the connection.
OUTCOMES: Final = ("delivered", "acked", "nacked", "dropped", "failed", "reconnects")
#: Every name :attr:`Consumer.counters` has (a closed set: all present from the start).
COUNTERS: Final = OUTCOMES + MALFORMED


def _with_heartbeat(url: str, heartbeat: int) -> str:
    """aiormq reads the heartbeat from the URL; the settings' value wins unless one is there."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("heartbeat", str(heartbeat))
    return urlunsplit(parts._replace(query=urlencode(query)))


class _Inbox(NamedTuple):
    channel: aiormq.abc.AbstractChannel
    queue: str
    message: aiormq.abc.DeliveredMessage


class Consumer:
    """Consume reports with a callback, the fedora-messaging way, and survive broker restarts.

    ``await Consumer(callback).run()`` connects, declares the queues and bindings, and feeds
    each well-formed report to the callback, one at a time. It returns the exit code of a
    ``HaltConsumer`` (or 0 after :meth:`stop`). A lost connection is re-made with jittered
    exponential backoff (``reconnect_min`` .. ``reconnect_max``), the queues and bindings are
    declared again and consuming resumes; nothing needs restarting by hand.

    With ``no_ack`` the broker counts a message as settled when it sends it (``basic.consume
    no-ack``): nothing is acknowledged one by one, which roughly doubles what one consumer
    takes in. For viewers that would rather drop than queue (a dashboard): a lost connection
    loses the messages in hand, ``Nack``/``Drop`` are only counted, and at most ``prefetch``
    messages wait for the callback; beyond that the oldest are dropped and counted as
    ``dropped``, so memory stays bounded however fast reports arrive.

    Attributes:
        counters: how many messages met each fate (names: :data:`COUNTERS`).
    """

    def __init__(
        self,
        callback: Any,
        *,
        bindings: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        queues: Mapping[str, Mapping[str, Any]] | None = None,
        settings: Settings | None = None,
        prefetch: int = 100,
        halt_on_error: bool = False,
        no_ack: bool = False,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        if prefetch < 1:
            raise ConfigError(f"prefetch must be at least 1, got {prefetch}")
        self._queues, self._bindings = plan(self.settings, bindings, queues)
        self.callback = resolve_callback(callback)
        self.prefetch = prefetch
        self.halt_on_error = halt_on_error
        self.no_ack = no_ack
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._inbox: asyncio.Queue[_Inbox] = asyncio.Queue()
        self._stopped = asyncio.Event()
        self._keeper = _AiormqKeeper(self)
        self._exit_code = 0
        self._error: BaseException | None = None
        self._malformed_log = Malformed()

    @property
    def consuming(self) -> asyncio.Event:
        """Set while the queues are bound and consumed (cleared while reconnecting)."""
        return self._keeper.connected

    @property
    def status(self) -> Status:
        """The connection's state (connected, or why not and since when), for views."""
        return self._keeper.status

    def stop(self, exit_code: int = 0) -> None:
        """Stop consuming: :meth:`run` returns ``exit_code``; unacked messages go back."""
        if not self._stopped.is_set():
            self._exit_code = exit_code
            self._stopped.set()
            self._keeper.stop()

    async def run(self) -> int:
        """Consume until halted or stopped; returns the exit code.

        Raises:
            AuthenticationError: the broker refused the credentials on the first attempt.
            UntrustedCertificate: the broker's certificate did not verify (first attempt).
            BrokerError: the broker refused a queue or binding (e.g. inconsistent arguments).
            CallbackError: the callback failed, with ``halt_on_error``.
        """
        worker = asyncio.ensure_future(self._work())
        try:
            await self._keeper.run()
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            await self._keeper.close(self.settings.close_timeout)
        if self._error is not None:
            raise self._error
        return self._exit_code

    def _opened(self, session: _Session) -> None:
        if self._keeper.reconnects:
            self.counters["reconnects"] = self._keeper.reconnects
            log.info("consumer resumed on %s", mask_url(session.url))  # (the keeper said it)
        else:
            log.info("consuming on %s", mask_url(session.url))

    def _tls(self, url: str) -> dict[str, Any]:
        if url.startswith("amqps:") and self.settings.ca_file:
            return {"context": ssl.create_default_context(cafile=self.settings.ca_file)}
        return {}

    async def _setup(
        self, conn: aiormq.abc.AbstractConnection
    ) -> tuple[aiormq.abc.AbstractChannel, asyncio.Future[None]]:
        """Declare exchanges, queues and bindings, then start consuming (again).

        Returns the channel and a future that is done once the broker cancels a consumer.
        """
        channel = await conn.channel()
        cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_cancel(frame: Any) -> None:
            if not cancelled.done():
                cancelled.set_result(None)

        channel.on_consumer_cancel_callbacks.add(on_cancel)
        await channel.basic_qos(prefetch_count=self.prefetch)
        names: dict[str, str] = {}
        for queue in self._queues:
            ok = await channel.queue_declare(
                queue.name,
                durable=queue.durable,
                auto_delete=queue.auto_delete,
                exclusive=queue.exclusive,
                arguments=queue.arguments,
            )
            names[queue.name] = ok.queue or queue.name
        declared: set[str] = set()
        for binding in self._bindings:
            if binding.exchange not in declared and not binding.exchange.startswith("amq."):
                await channel.exchange_declare(
                    binding.exchange, exchange_type="topic", durable=True
                )
                declared.add(binding.exchange)
            for key in binding.routing_keys:
                await channel.queue_bind(names[binding.queue], binding.exchange, routing_key=key)
        for name in names.values():
            await channel.basic_consume(
                name, functools.partial(self._deliver, channel, name), no_ack=self.no_ack
            )
        return channel, cancelled

    async def _deliver(
        self,
        channel: aiormq.abc.AbstractChannel,
        queue: str,
        message: aiormq.abc.DeliveredMessage,
    ) -> None:
        if self.no_ack and self._inbox.qsize() >= self.prefetch:
            # Already settled, so waiting would only grow memory. The oldest goes, as the
            # queue's own drop-head would: a task's latest report is the one worth showing.
            self._inbox.get_nowait()
            self.counters["dropped"] += 1
        self._inbox.put_nowait(_Inbox(channel, queue, message))

    async def _work(self) -> None:
        """Handle messages one at a time, in order, across reconnects."""
        try:
            while True:
                item = await self._inbox.get()
                if item.channel.is_closed and not self.no_ack:
                    continue  # from a lost connection: the broker has requeued it already
                outcome = await self._handle(item)
                if not self.no_ack:
                    await self._settle(item, outcome.verdict)
                if outcome.halt is not None:
                    halt = outcome.halt
                    log.info("consumer halted (exit code %d): %s", halt.exit_code, halt.reason)
                    self.stop(halt.exit_code)
                    return
                if outcome.error is not None and self.halt_on_error:
                    self._error = CallbackError(
                        f"callback failed on {item.message.routing_key}: {outcome.error!r}"
                    )
                    self._error.__cause__ = outcome.error
                    self.stop(1)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: stop rather than hang with no worker
            log.exception("consumer worker crashed")
            self._error = exc
            self.stop(1)

    async def _handle(self, item: _Inbox) -> Outcome:
        raw = item.message
        props = raw.header.properties
        found = classify(raw.body, props.content_type, self.settings.max_body)
        if isinstance(found, str):
            self._malformed(found, raw)
            return Outcome(Verdict.DROP)
        delivery = raw.delivery
        message = Message(
            report=found,
            routing_key=raw.routing_key or "",
            exchange=raw.exchange or "",
            queue=item.queue,
            body=raw.body,
            properties=props,
            delivery_tag=raw.delivery_tag or 0,
            redelivered=bool(raw.redelivered),
            consumer_tag=getattr(delivery, "consumer_tag", "") or "",
        )
        self.counters["delivered"] += 1
        outcome = await dispatch(self.callback, message)
        self.counters[outcome.verdict.value] += 1
        return outcome

    def _malformed(self, kind: str, raw: aiormq.abc.DeliveredMessage) -> None:
        self.counters[kind] += 1
        self._malformed_log.note(
            kind, raw.routing_key or "", len(raw.body), raw.header.properties.app_id
        )

    async def _settle(self, item: _Inbox, verdict: Verdict) -> None:
        tag = item.message.delivery_tag or 0
        try:
            if verdict is Verdict.ACK:
                await item.channel.basic_ack(tag)
            elif verdict is Verdict.NACK:
                await item.channel.basic_nack(tag, requeue=True)
            else:
                await item.channel.basic_reject(tag, requeue=False)
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            # The channel went away while the callback ran: the broker redelivers it.
            log.info("could not settle delivery %d (%s): %s", tag, verdict.value, exc)


def _reply_code(exc: BaseException) -> int:
    for arg in exc.args:
        code = getattr(arg, "reply_code", None)
        if isinstance(code, int):
            return code
    return 0


def _why(conn: aiormq.abc.AbstractConnection, channel: aiormq.abc.AbstractChannel) -> str:
    for closing in (conn.closing, channel.closing):
        if closing.done() and not closing.cancelled():
            exc = closing.exception()
            if exc is not None:
                return str(exc) or type(exc).__name__
    return "closed"


class _Session(NamedTuple):
    url: str
    conn: aiormq.abc.AbstractConnection
    channel: aiormq.abc.AbstractChannel
    cancelled: asyncio.Future[None]  # done once the broker cancels a consumer


class _AiormqKeeper(Keeper[_Session]):
    """The shared reconnect loop (:class:`~streamer.amqp.Keeper`) around aiormq connections:
    aiormq's failures are mapped to the errors the loop knows, so failover, backoff, the
    fatal errors and the log lines are the same as everywhere else."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__(consumer.settings, what="consumer", fatal=True, on_open=consumer._opened)
        self.consumer = consumer

    async def dial(self, url: str) -> _Session:
        settings = self.settings
        conn: aiormq.abc.AbstractConnection | None = None
        try:
            async with asyncio.timeout(settings.connect_timeout):
                conn = await aiormq.connect(
                    _with_heartbeat(url, settings.heartbeat),
                    client_properties={"connection_name": f"{settings.client_name} consumer"},
                    **self.consumer._tls(url),
                )
                channel, cancelled = await self.consumer._setup(conn)
        except BaseException as exc:
            if conn is not None and not conn.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=settings.close_timeout)
            mapped = _mapped(url, exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return _Session(url, conn, channel, cancelled)

    async def until_lost(self, session: _Session) -> object:
        # Any of these ends consuming: the connection, the channel, or a consumer the broker
        # cancelled (queue deleted). Waiting on the connection alone is how consumers get
        # stuck for ever with a live connection and nothing to read. The futures are
        # aiormq's to settle: waiting on them leaves them alone.
        conn, channel, cancelled = session.conn, session.channel, session.cancelled
        await asyncio.wait({conn.closing, channel.closing, cancelled}, return_when=FIRST_COMPLETED)
        why = "cancelled by the broker" if cancelled.done() else _why(conn, channel)
        await self.hang_up(session, self.settings.close_timeout)
        return why

    async def hang_up(self, session: _Session, timeout: float) -> None:
        if not session.conn.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.conn.close(), timeout=timeout)


def _mapped(url: str, exc: BaseException) -> BaseException:
    """aiormq's failure as one :func:`streamer.amqp.classify` knows (or ``exc`` itself)."""
    if isinstance(exc, aiormq.exceptions.ChannelClosed):
        return BrokerError(str(exc), _reply_code(exc))
    if isinstance(
        exc,
        aiormq.exceptions.AuthenticationError | aiormq.exceptions.ProbableAuthenticationError,
    ):
        return AuthenticationError(f"broker at {mask_url(url)} refused the credentials: {exc}", 403)
    cert = _cert_error(exc)
    if cert is not None:
        return cert
    if isinstance(exc, OSError) and exc.errno and exc.strerror:  # aiormq's, around the socket's
        return OSError(exc.errno, exc.strerror)  # (ConnectionRefusedError for ECONNREFUSED)
    if isinstance(
        exc, aiormq.exceptions.AMQPError | aiormq.exceptions.ChannelInvalidStateError
    ):  # lost while setting up, or refused by the peer
        return ConnectionError(str(exc) or type(exc).__name__)
    return exc


async def consume(
    callback: Any,
    *,
    bindings: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    queues: Mapping[str, Mapping[str, Any]] | None = None,
    settings: Settings | None = None,
    prefetch: int = 100,
    halt_on_error: bool = False,
) -> int:
    """Feed every report on the bound queues to ``callback`` until it halts; return its code.

    The callback takes one :class:`Message`. Returning acks it; raising :class:`Nack`
    requeues it, :class:`Drop` rejects it, :class:`HaltConsumer` acks it and stops; any other
    exception is logged with its traceback and the message rejected (never requeued: a poison
    message must not loop), then consuming goes on unless ``halt_on_error``. See
    :class:`Consumer` for reconnects and counters.
    """
    consumer = Consumer(
        callback,
        bindings=bindings,
        queues=queues,
        settings=settings,
        prefetch=prefetch,
        halt_on_error=halt_on_error,
    )
    return await consumer.run()


async def subscribe(
    *,
    bindings: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    queues: Mapping[str, Mapping[str, Any]] | None = None,
    settings: Settings | None = None,
    prefetch: int = 100,
) -> AsyncIterator[Message]:
    """Yield each report as a :class:`Message`; it is acked when the loop asks for the next.

    Reconnects like :func:`consume`. Leaving the loop stops consuming; the message in hand
    when the loop body raises or breaks is returned to the queue, unacked.
    """
    handoff: asyncio.Queue[tuple[Message, asyncio.Future[None]]] = asyncio.Queue(maxsize=1)

    async def callback(message: Message) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await handoff.put((message, done))
        await done

    consumer = Consumer(
        callback, bindings=bindings, queues=queues, settings=settings, prefetch=prefetch
    )
    running = asyncio.ensure_future(consumer.run())
    try:
        while True:
            getting = asyncio.ensure_future(handoff.get())
            await asyncio.wait({getting, running}, return_when=FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                await running  # raises what stopped the consumer
                return
            message, done = getting.result()
            yield message
            done.set_result(None)
    finally:
        consumer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await running


def _cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate failure behind ``exc`` (aiormq wraps it), if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
