"""The fast receiver: reports read at the publisher's speed, for the tools that watch them.

``streamer dashboard``, ``watch`` and ``listen`` (and the load harness's watcher) need the
bodies of many reports quickly, not a callback per message with every property decoded. The
receiver consumes on the shared AMQP core (:mod:`streamer.amqp`): deliveries are read straight
from the frames (body, routing key, content type), handed over in one list per socket read,
and acknowledged in one ``basic.ack`` with ``multiple`` per batch, or not at all with
``no_ack`` for tools that only display. It declares its queues and bindings as the
fedora-messaging-style consumer does (:mod:`streamer.topology`), reconnects and resumes by
itself, and takes consume arguments. Given a ``stream`` (a stream queue, such as the
exchange's history, :mod:`streamer.history`), it reads that queue from an offset instead,
with acknowledgements (streams require them), and after a reconnect resumes at the message
after the last one it handed over: nothing is shown twice and nothing is skipped.

Backpressure is the socket's: a batch is handled before the next read, so a receiver that
cannot keep up makes the broker hold (and, on a capped queue, drop the oldest) reports
instead of growing memory here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from .amqp import Connection, ConnectionCallbacks, Delivery, Link, Status
from .message import Malformed, classify
from .report import Report, decode_received
from .settings import Settings, mask_url
from .topology import Binding, plan

__all__ = ["Receiver", "ReportReader"]

log = logging.getLogger(__name__)

_CHANNEL = 1
#: How long the viewing tools (dashboard, watch, listen) let deliveries pile up between two
#: reads: they redraw a few times a second, so 20 ms cannot be seen, and fewer, larger reads
#: save CPU: the dashboard attached to a full-speed publisher took ~12% less CPU per report
#: than with 5 ms (bench/receive.py), as the event loop's share halved.
VIEW_GATHER: Final = 0.02


class ReportReader:
    """Turns batches of deliveries into reports: one msgspec decoder for all, and malformed
    bodies counted by kind (never folded), as every receiving tool counts them. The reports
    are :class:`~streamer.report.Received`: their progress is decoded only when a view reads
    it.

    Attributes:
        malformed: the malformed messages seen, by kind.
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.malformed = Malformed()

    def __call__(self, deliveries: list[Delivery]) -> list[tuple[str, bytes, Report]]:
        """``(routing key, body, report)`` of the well-formed deliveries, in order."""
        out: list[tuple[str, bytes, Report]] = []
        append, max_body = out.append, self.max_body
        for _, key, content_type, body in deliveries:
            found = classify(body, content_type, max_body, decode_received)
            if isinstance(found, str):
                self.malformed.note(found, key, len(body))
            else:
                append((key, body, found))
        return out


class Receiver(ConnectionCallbacks):
    """Consume the planned queues and hand every batch of deliveries to ``on_batch``.

    ``await receiver.run()`` connects, declares, consumes and keeps doing so across broker
    restarts until :meth:`stop`. ``on_batch`` runs on the event loop, synchronously, once per
    socket read; an exception in it is logged and the batch counts as handled.

    Args:
        on_batch: gets ``[(delivery_tag, routing_key, content_type, body), ...]`` in order.
        settings: broker, exchange, TLS, timeouts.
        bindings, queues: as for :class:`~streamer.consumer.Consumer` (default: ``<prefix>.#``
            on an exclusive, auto-deleted queue capped at 10,000 reports, oldest dropped).
        prefetch: unacknowledged deliveries in flight at most (with acks).
        no_ack: the broker forgets a message once sent: for tools that only display.
        arguments: ``basic.consume`` arguments (e.g. ``{"x-stream-offset": "first"}``).
        what: who is receiving, for log lines and the connection's name.
        stream: read this existing stream queue (declared by someone else, e.g.
            ``streamer history enable``) instead of declaring and binding queues; acks on.
        offset: where to start reading ``stream``: ``"first"``, ``"last"``, ``"next"``, an
            offset, or a :class:`datetime.datetime` (the broker starts at the chunk holding
            it, so a few earlier messages may come first).
        gather: seconds to let deliveries pile up after a small read, so that one read (and
            one batch) carries many (see ``Connection.gather_reads``); for views that redraw
            a few times a second. 0 hands each read over at once.
        status: the connection's state to keep up to date (see
            :class:`~streamer.amqp.Status`); default: a new one, as :attr:`status`.

    Raises (from :meth:`run`):
        AuthenticationError, UntrustedCertificate: before the first connection.
        BrokerError: the broker refused a queue or binding (retrying would not help).
    """

    def __init__(
        self,
        on_batch: Callable[[list[Delivery]], None],
        *,
        settings: Settings,
        bindings: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        queues: Mapping[str, Mapping[str, Any]] | None = None,
        prefetch: int = 2_000,
        no_ack: bool = True,
        arguments: Mapping[str, Any] | None = None,
        what: str = "receiver",
        gather: float = 0.0,
        stream: str | None = None,
        offset: Any = "next",
        status: Status | None = None,
    ) -> None:
        self.settings = settings
        self.on_batch = on_batch
        self.prefetch = prefetch
        self.no_ack = no_ack
        self.arguments = dict(arguments or {})
        self.gather = gather
        self.stream: str | None = None
        self.start: Any = "next"
        #: The stream offset of the last message handed over (-1: none yet).
        self.offset = -1
        if stream is not None:
            self.read_stream(stream, offset)
        self._queues, self._bindings = plan(settings, bindings, queues)
        self.received = 0
        self.link = Link(
            settings,
            name=f"{settings.client_name} {what}",
            callbacks=self,
            setup=self._setup,
            what=what,
            fatal=True,
            status=status,
        )
        self._conn: Connection | None = None

    @property
    def bindings(self) -> list[Binding]:
        """The bindings it declares (when not reading a stream)."""
        return self._bindings

    def read_stream(self, stream: str, offset: Any) -> None:
        """Read ``stream`` from ``offset`` instead of the planned queues (call before
        :meth:`run`); see the ``stream`` and ``offset`` arguments."""
        self.stream, self.start, self.no_ack = stream, offset, False

    def describe(self) -> str:
        """What it receives, for people: the broker (password masked), exchanges, bindings."""
        if self.stream is not None:
            return f"{mask_url(self.settings.urls[0])}, stream {self.stream}"
        keys = ", ".join(
            f"{b.exchange} {key}" if len(self._bindings) > 1 else key
            for b in self._bindings
            for key in b.routing_keys
        )
        exchanges = sorted({b.exchange for b in self._bindings})
        return (
            f"{mask_url(self.settings.urls[0])}, exchange {', '.join(exchanges)}, bindings {keys}"
        )

    @property
    def consuming(self) -> asyncio.Event:
        """Set while the queues are bound and consumed (cleared while reconnecting)."""
        return self.link.connected

    @property
    def status(self) -> Status:
        """The connection's state (connected, or why not and since when), for views."""
        return self.link.status

    @property
    def reconnects(self) -> int:
        return self.link.reconnects

    async def run(self) -> None:
        """Receive until :meth:`stop`; then close the connection."""
        try:
            await self.link.run()
        finally:
            await self.link.close(self.settings.close_timeout)

    def stop(self) -> None:
        """Stop receiving: :meth:`run` returns (unacknowledged deliveries go back)."""
        self.link.stop()

    async def _setup(self, conn: Connection) -> None:
        """Declare exchanges, queues and bindings, then consume every queue on one channel."""
        self._conn = conn
        await conn.open_channel(_CHANNEL)
        if self.stream is not None:
            await self._read_stream(conn, self.stream)
            return
        names: dict[str, str] = {}
        for queue in self._queues:
            names[queue.name] = await conn.declare_queue(
                _CHANNEL,
                queue.name,
                durable=queue.durable,
                auto_delete=queue.auto_delete,
                exclusive=queue.exclusive,
                arguments=queue.arguments,
            )
        declared: set[str] = set()
        for binding in self._bindings:
            if binding.exchange not in declared:
                await conn.declare_exchange(_CHANNEL, binding.exchange, confirm=False)
                declared.add(binding.exchange)
            for key in binding.routing_keys:
                await conn.bind(_CHANNEL, names[binding.queue], binding.exchange, key)
        for name in names.values():
            await conn.consume(
                _CHANNEL,
                name,
                prefetch=self.prefetch,
                no_ack=self.no_ack,
                arguments=self.arguments,
            )
        if self.gather:  # from now on: set-up replies must not wait for it
            conn.gather_reads(self.gather)

    async def _read_stream(self, conn: Connection, stream: str) -> None:
        """Consume ``stream`` from the start offset, or after the last message handed over."""
        await conn.check_queue(_CHANNEL, stream)
        start = self.offset + 1 if self.offset >= 0 else self.start
        arguments = {**self.arguments, "x-stream-offset": start}
        await conn.consume(
            _CHANNEL, stream, prefetch=self.prefetch, no_ack=False, arguments=arguments
        )
        if self.gather:
            conn.gather_reads(self.gather)

    # -- the connection's events ----------------------------------------------------------

    def on_deliveries(self, channel: int, deliveries: list[Delivery]) -> None:
        conn = self._conn
        if self.stream is not None and conn is not None:
            # (a numeric start offset is exact: the broker skips the chunk's earlier ones)
            self.offset = conn.stream_offset(channel)
        self.received += len(deliveries)
        try:
            self.on_batch(deliveries)
        except Exception:  # a bug in a view must not cost the connection
            log.exception("handling %d deliveries failed", len(deliveries))
        if not self.no_ack and conn is not None:
            conn.ack(channel, deliveries[-1][0], multiple=True)

    def on_cancel(self, channel: int) -> None:
        """The broker cancelled us (the queue was deleted): reconnect, which declares again."""
        log.warning("the broker cancelled the %s's consumer; reconnecting", self.link.what)
        if self._conn is not None:
            self._conn.abandon()
