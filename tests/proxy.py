"""A TCP proxy for fault tests: sits between a client and the broker and breaks things.

``reset()`` kills every proxied connection at once (like a broker crash or a network reset)
while new connections keep working; ``stop()``/``start()`` take the listening side away
(like a broker that is down); ``blackhole`` keeps sockets open but forwards nothing, not even
a close (a half-open link: only heartbeats can tell); ``latency`` delays every chunk by that
many seconds in each direction (a slow link), for connections accepted after it is set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class Proxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self._template = parts
        self.port = 0
        self.blackhole = False
        self.latency = 0.0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The upstream URL (credentials, vhost) with the proxy as host and port."""
        auth = self._template.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(self._template._replace(netloc=netloc))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every live connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.reset()

    async def reset(self) -> None:
        """Abort every proxied connection (both sides see a reset)."""
        for client, upstream in list(self._pairs):
            for writer in (client, upstream):
                writer.transport.abort()
        self._pairs.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            pipe = self._slow_pipe(src, dst, self.latency) if self.latency else self._pipe(src, dst)
            self._spawn(pipe)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError, RuntimeError):
            while data := await src.read(65536):
                if not self.blackhole:
                    dst.write(data)
                    await dst.drain()
        if not self.blackhole:  # a black hole swallows the goodbye too: only heartbeats tell
            dst.transport.abort()

    async def _slow_pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, latency: float
    ) -> None:
        """Forward each chunk ``latency`` seconds after it arrived, in order.

        The queue is bounded, so a peer that does not read pushes back on the sender as it
        would through a real link, instead of piling up data here.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=64)

        async def deliver() -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError, RuntimeError):
                while True:
                    due, data = await queue.get()
                    if not data:
                        break
                    await asyncio.sleep(due - loop.time())
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        self._spawn(deliver())
        with contextlib.suppress(OSError, asyncio.CancelledError, RuntimeError):
            while data := await src.read(65536):
                if not self.blackhole:
                    await queue.put((loop.time() + latency, data))
            if not self.blackhole:
                await queue.put((loop.time() + latency, b""))  # end of stream, after the data

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
