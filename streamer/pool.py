"""The connection pool: ``connections`` × ``channels`` confirm-mode channels, kept alive.

Each connection slot is kept by a :class:`~streamer.amqp.Link` (the core's one reconnect
loop: broker URLs in order, jittered exponential backoff) whose set-up opens the slot's
confirm channels and declares the exchange; the pool tells its owner when channels open or
are lost. A task id always hashes to the same channel, so reports of one task leave in order.

Leaks are structurally impossible in the ways that bit Pulp with kombu: connections are only
ever created by keepers, a keeper holds at most one, ``close()`` ends every keeper and closes
every connection, a forked child drops (without a word on the wire) the sockets it inherited,
and a pool garbage-collected while open warns with ``ResourceWarning``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from .amqp import Connection, ConnectionCallbacks, Link
from .settings import Settings, mask_url

__all__ = ["Channel", "ConnectionPool", "PoolOwner"]

log = logging.getLogger(__name__)

_pools: Final[weakref.WeakSet[ConnectionPool]] = weakref.WeakSet()
_hooked = False  # the fork hook is installed (by the first pool)


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._forked()


def _track(pool: ConnectionPool) -> None:
    """Remember ``pool`` so a fork child lets go of its sockets; the first pool installs the
    fork hook (importing streamer installs none)."""
    global _hooked
    if not _hooked:
        _hooked = True
        os.register_at_fork(after_in_child=_after_fork_in_child)
    _pools.add(pool)


class PoolState(enum.Enum):
    INIT = "init"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Channel:
    """One confirm-mode channel: its delivery tags and what awaits confirmation.

    Attributes:
        index: position in the pool (``0 .. connections*channels-1``).
        number: AMQP channel number on its connection.
        conn: the connection it lives on, or ``None`` while that is down.
        outstanding: delivery tag → (write time, entry) of unconfirmed publishes.
    """

    __slots__ = ("conn", "index", "next_tag", "number", "outstanding", "returned", "slot")

    def __init__(self, index: int, slot: int, number: int) -> None:
        self.index = index
        self.slot = slot
        self.number = number
        self.conn: Connection | None = None
        self.next_tag = 1
        self.outstanding: OrderedDict[int, tuple[float, Any]] = OrderedDict()
        self.returned = 0

    def reset(self, conn: Connection | None) -> None:
        """Attach to a new connection (or none), forgetting unconfirmed publishes."""
        self.outstanding.clear()
        self.next_tag = 1
        self.returned = 0
        self.conn = conn


class PoolOwner:
    """What the pool reports to the publisher that owns it."""

    def channels_open(self, channels: list[Channel]) -> None:
        """A connection (re)opened; these channels can carry publishes again."""

    def channels_lost(self, channels: list[Channel]) -> None:
        """A connection was lost with whatever awaited confirms on ``channels``."""

    def confirm(self, channel: Channel, tag: int, multiple: bool, ok: bool) -> None:
        """The broker settled publishes on ``channel`` (see ``Connection`` callbacks)."""

    def blocked(self, channels: list[Channel], blocked: bool) -> None:
        """A connection was blocked or unblocked by a broker resource alarm."""

    def writable(self) -> None:
        """A transport that pushed back can take writes again."""

    def forked(self) -> None:
        """This process is a fork child: the pool is closed and must not be used."""


class _Keeper(ConnectionCallbacks):
    """Keeps one connection slot connected (a :class:`~streamer.amqp.Link`); routes its
    events to the owner."""

    def __init__(self, pool: ConnectionPool, slot: int, channels: list[Channel]) -> None:
        self.pool = pool
        self.slot = slot
        self.channels = channels
        self.task: asyncio.Task[None] | None = None
        self.link = Link(
            pool.settings,
            name=pool.settings.client_name,
            callbacks=self,
            setup=self._setup,
            what="publisher",
            on_open=self._opened,
        )

    @property
    def conn(self) -> Connection | None:
        return self.link.conn if self.link.connected.is_set() else None

    async def _setup(self, conn: Connection) -> None:
        """Every channel in confirm mode, and the exchange declared (on channel 1)."""
        for channel in range(1, len(self.channels) + 1):
            await conn.open_channel(channel, confirm=True)
        await conn.declare_exchange(1, self.pool.settings.exchange, confirm=True)

    def _opened(self, conn: Connection) -> None:
        for ch in self.channels:
            ch.reset(conn)
        self.pool.owner.channels_open(self.channels)

    def on_confirm(self, channel: int, tag: int, multiple: bool, ok: bool) -> None:
        self.pool.owner.confirm(self.channels[channel - 1], tag, multiple, ok)

    def on_return(self, channel: int) -> None:
        self.channels[channel - 1].returned += 1

    def on_blocked(self, blocked: bool) -> None:
        self.pool.owner.blocked(self.channels, blocked)

    def on_writable(self) -> None:
        self.pool.owner.writable()

    def on_lost(self, exc: BaseException | None) -> None:
        self.pool.reconnects += 1
        self.pool.owner.channels_lost(self.channels)
        for ch in self.channels:
            ch.reset(None)


class ConnectionPool:
    """Connections × confirm-mode channels to the first broker URL that answers.

    Args:
        settings: connection and pool settings.
        owner: receives channel and confirm events.
    """

    def __init__(self, settings: Settings, owner: PoolOwner) -> None:
        self.settings = settings
        self.owner = owner
        self.state = PoolState.INIT
        self.reconnects = 0
        self.pid = os.getpid()
        per = settings.channels
        self.channels: list[Channel] = [
            Channel(slot * per + n, slot, n + 1)
            for slot in range(settings.connections)
            for n in range(per)
        ]
        self._keepers = [
            _Keeper(self, slot, self.channels[slot * per : (slot + 1) * per])
            for slot in range(settings.connections)
        ]
        _track(self)

    def channel_index(self, key: str) -> int:
        """The channel a task uses, always the same one for the same key in this process."""
        return hash(key) % len(self.channels)

    @property
    def open_connections(self) -> int:
        return sum(1 for k in self._keepers if k.link.connected.is_set())

    def start(self) -> None:
        """Start keeping every slot connected (returns at once)."""
        if self.state is not PoolState.INIT:
            raise RuntimeError(f"pool cannot start from state {self.state.value}")
        self.state = PoolState.OPEN
        for keeper in self._keepers:
            keeper.task = asyncio.get_running_loop().create_task(
                keeper.link.run(), name=f"streamer-keeper-{keeper.slot}"
            )

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until every slot is connected; False if ``timeout`` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(k.link.connected.wait() for k in self._keepers))
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop reconnecting and close every connection. Idempotent."""
        if self.state in (PoolState.CLOSING, PoolState.CLOSED):
            return
        started = self.state is PoolState.OPEN
        self.state = PoolState.CLOSING
        if started and self.pid == os.getpid():
            for keeper in self._keepers:
                keeper.link.stop()
                if keeper.task is not None:
                    keeper.task.cancel()
            await asyncio.gather(
                *(k.task for k in self._keepers if k.task is not None), return_exceptions=True
            )
            await asyncio.gather(
                *(k.link.close(self.settings.close_timeout) for k in self._keepers)
            )
        for ch in self.channels:
            ch.reset(None)
        self.state = PoolState.CLOSED

    def _forked(self) -> None:
        """In a forked child: let go of the parent's sockets without touching the wire."""
        for keeper in self._keepers:
            conn, keeper.link.conn = keeper.link.conn, None
            transport = conn.transport if conn is not None else None
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                # Point the inherited descriptor at /dev/null: the child lets go of the
                # parent's socket, and the stale transport can never write to (or close)
                # anything real through that descriptor number.
                devnull = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(devnull, sock.fileno())
                except OSError:
                    pass
                finally:
                    os.close(devnull)
            keeper.task = None
        for ch in self.channels:
            ch.reset(None)
        self.state = PoolState.CLOSED
        self.owner.forked()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if self.state is PoolState.OPEN and self.pid == os.getpid():
            _warn(f"unclosed streamer pool {self!r}", ResourceWarning, source=self)

    def __repr__(self) -> str:
        return (
            f"<ConnectionPool {self.state.value} {mask_url(self.settings.urls[0])} "
            f"{self.open_connections}/{len(self._keepers)} connected>"
        )
