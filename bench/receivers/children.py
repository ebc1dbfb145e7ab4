"""The receivers bench/receive.py runs as its own children (the streamer commands run as they
are): the raw frame reader, the harness watcher, and, for the drain, the code of ``streamer
listen`` and ``streamer watch`` (and the harness watcher's) pointed at the drain queue.

Why listen and watch run in-process for the drain: their commands cannot consume a named
queue (no ``[[bindings]]``/``[queues]`` from --config), so the child calls the commands' own
coroutines (``streamer.cli.listen._listen`` in ``--json`` mode with stdout on /dev/null,
``streamer.watch.watch`` with a non-terminal console) with their module's ``Receiver`` swapped
for one that binds the drain queue instead. Decoding, folding, encoding and printing stay the
commands' own code; only the queue differs.

Every child tells the parent what it got through a small JSON file (:class:`Status`), written
every 0.2 s and once more the moment a drain completes, so the parent never talks to it while
it is being timed. SIGTERM ends every child; it writes the file a last time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import threading
import time
from typing import Any

import msgspec

from .broker import BINDING_KEY, CAPPED

TICK = 0.2


class _Seen(msgspec.Struct):
    """Just what a gap count needs (msgspec skips the rest of the body)."""

    task_id: str
    seq: int = 0


_decode = msgspec.json.Decoder(_Seen).decode


class Status:
    """What a child received, written to ``path`` for the parent (atomically, via rename).

    ``expected`` (drain only): once that many arrived, ``t_last`` (the wall time after the
    batch that completed it) is final and the file is written at once.
    """

    def __init__(self, path: str, expected: int = 0) -> None:
        self.path, self.expected = path, expected
        self.count = 0
        self.batches = 0  # seen() calls: socket reads for the raw reader and the tools
        self.gaps: int | None = None
        self.t_first: float | None = None
        self.t_last = 0.0
        self.done = False
        self.error: str | None = None
        self._last_seq: dict[str, int] = {}

    def seen(self, n: int) -> None:
        """``n`` more arrived (call after handling them)."""
        now = time.time()
        if self.t_first is None:
            self.t_first = now
        self.count += n
        self.batches += 1
        if not self.done:
            self.t_last = now
            if self.expected and self.count >= self.expected:
                self.done = True
                self.write()

    def body(self, body: bytes) -> None:
        """Note one report's task and seq: a seq beyond the next one is a gap."""
        seen = _decode(body)
        last = self._last_seq.get(seen.task_id, 0)
        if seen.seq > last:
            self.gaps = (self.gaps or 0) + seen.seq - last - 1
            self._last_seq[seen.task_id] = seen.seq

    def write(self) -> None:
        data = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "path"}
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)


def drain_tables(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The drain queue as streamer's ``bindings``/``queues`` (same arguments as the parent's)."""
    queue = spec["queue"]
    bindings = [{"exchange": spec["exchange"], "queue": queue, "routing_keys": [BINDING_KEY]}]
    queues = {
        queue: {
            "durable": True,
            "auto_delete": False,
            "exclusive": False,
            "arguments": spec["queue_args"],
        }
    }
    return bindings, queues


async def _until_sigterm(status: Status) -> None:
    """Write the status every tick until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        status.write()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), TICK)


# --------------------------------------------------------------------------- raw


def run_raw(spec: dict[str, Any], status: Status) -> None:
    """The ceiling: streamer.amqp's connection, no_ack, ``on_deliveries`` only counts."""
    import uvloop

    from streamer.amqp import Connection, ConnectionCallbacks, Delivery, open_connection
    from streamer.settings import Settings

    class Counter(ConnectionCallbacks):
        def on_deliveries(self, channel: int, deliveries: list[Delivery]) -> None:
            status.seen(len(deliveries))

    async def setup(conn: Connection) -> None:
        await conn.open_channel(1)
        queue = spec.get("queue")
        if queue is None:  # attached: a queue like the tools' own
            queue = await conn.declare_queue(
                1, "", durable=False, auto_delete=True, exclusive=True, arguments=CAPPED
            )
            await conn.bind(1, queue, spec["exchange"], BINDING_KEY)
        await conn.consume(1, queue, prefetch=spec["prefetch"], no_ack=True)

    async def main() -> None:
        settings = Settings(url=spec["url"], exchange=spec["exchange"])
        conn = await open_connection(
            spec["url"], settings, name="bench raw reader", callbacks=Counter(), setup=setup
        )
        try:
            await _until_sigterm(status)
        finally:
            await conn.close()

    uvloop.run(main())


# --------------------------------------------------------------------------- harness watcher


def run_watcher(spec: dict[str, Any], status: Status) -> None:
    """loadtest.watcher.Watcher as the harness builds it (its default 50,000 cap). For the
    drain, its module's ``Receiver`` binds the drain queue instead of an anonymous one (as for
    listen and watch below); its fold is untouched."""
    harness = importlib.import_module("loadtest.watcher")
    drain = bool(spec.get("queue"))
    if drain:
        _patch_receiver(harness, spec, status)
    watcher = harness.Watcher(spec["url"], spec["exchange"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    watcher.start()
    try:
        while not stop.wait(TICK):
            snap = watcher.snapshot()
            status.gaps = snap["lost"]
            if not drain:
                status.count, status.t_last = snap["received"], watcher.last_received
            if not status.done:
                status.write()
    finally:
        watcher.stop()
        if watcher.error is not None:
            status.error = repr(watcher.error)


# --------------------------------------------------------------------------- listen, watch


def _patch_receiver(module: Any, spec: dict[str, Any], status: Status) -> None:
    """Make ``module.Receiver`` bind the drain queue and count each batch after the tool."""
    from streamer.receiver import Receiver

    bindings, queues = drain_tables(spec)

    def receiver(on_batch: Any, **kwargs: Any) -> Receiver:
        def counted(deliveries: list[Any]) -> None:
            on_batch(deliveries)
            status.seen(len(deliveries))

        kwargs.update(bindings=bindings, queues=queues)
        return Receiver(counted, **kwargs)

    module.Receiver = receiver


def run_listen_tool(spec: dict[str, Any], status: Status) -> None:
    """``streamer listen --json > /dev/null`` on the drain queue."""
    import uvloop

    from streamer.settings import Settings

    listen = importlib.import_module("streamer.cli.listen")  # the package shadows the name

    _patch_receiver(listen, spec, status)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # listen writes to sys.stdout.buffer, i.e. fd 1
    settings = Settings(url=spec["url"], exchange=spec["exchange"])
    ticker = _ticker(status)
    try:  # listen installs its own SIGTERM handler (a clean stop), as the command does
        uvloop.run(listen._listen(settings, [BINDING_KEY], "json", None, None))
    finally:
        ticker.set()


def run_watch_tool(spec: dict[str, Any], status: Status) -> None:
    """``streamer watch`` (summary lines, as when stdout is not a terminal) on the drain queue."""
    import uvloop
    from rich.console import Console

    from streamer.settings import Settings

    watch = importlib.import_module("streamer.watch")

    _patch_receiver(watch, spec, status)
    settings = Settings(url=spec["url"], exchange=spec["exchange"])

    async def main() -> int:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        with open(os.devnull, "w") as out:
            console = Console(file=out)
            return await watch.watch(settings, console=console, stop=stop)

    ticker = _ticker(status)
    try:
        uvloop.run(main())
    finally:
        ticker.set()


def _ticker(status: Status) -> threading.Event:
    """Write the status every tick from a thread (the tools own their event loop)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(TICK):
            if not status.done:
                status.write()

    threading.Thread(target=run, daemon=True).start()
    return stop
