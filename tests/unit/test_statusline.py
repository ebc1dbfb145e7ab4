"""The status line on a terminal: drawn while not connected, gone once connected, and log
records written above it without the reconnect loop's state lines (no terminal needed: a
console that believes it is one)."""

from __future__ import annotations

import asyncio
import io
import logging

from rich.console import Console

from streamer.amqp import Phase, Status
from streamer.statusline import StatusLine


async def test_the_line_shows_until_connected_and_logs_go_above_it() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    status = Status("listen")
    status.trying("amqp://guest:s3cret@127.0.0.1:5672/")
    status.error = ConnectionRefusedError(111, "Connection refused")
    status.move(Phase.UNREACHABLE, 1.0)
    status.attempts = 2
    root = logging.getLogger()
    handlers = root.handlers[:]
    async with StatusLine(status, console, interval=0.01):
        await asyncio.sleep(0.05)
        logging.getLogger("streamer.amqp.link").warning("listen: broker unreachable at ...")
        logging.getLogger("streamer.receiver").warning("something else happened")
        await asyncio.sleep(0.05)
        assert root.handlers != handlers  # through rich, while the line is up
        status.move(Phase.CONNECTED, 2.0)
        await asyncio.sleep(0.05)
    assert root.handlers == handlers
    shown = out.getvalue()
    assert "connecting to amqp://guest:***@127.0.0.1:5672/ — attempt 2, connection refused" in (
        shown
    )
    assert "s3cret" not in shown
    assert "something else happened" in shown
    assert "broker unreachable at" not in shown  # the line says it, and keeps saying it


async def test_nothing_when_not_a_terminal() -> None:
    out = io.StringIO()
    status = Status("listen")
    async with StatusLine(status, Console(file=out, force_terminal=False), interval=0.01):
        await asyncio.sleep(0.03)
    assert out.getvalue() == ""
