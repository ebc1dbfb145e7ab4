"""The connection's face on a terminal: one status line, redrawn in place while not connected.

Every command that keeps a connection (listen, watch, dashboard, consume, simulate, demo)
shows the same :class:`~streamer.amqp.Status` the same way: on a terminal, a line such as
``connecting to amqp://guest:***@127.0.0.1:5672/ — attempt 4, connection refused, next in
0.8 s`` that disappears once connected; in a log (not a terminal), nothing here, since the
reconnect loop writes one line per change of state. While the line is up, log records go
through rich on the same console (above the line, never through it), and the loop's own
state lines are left out: the status line says the same, and keeps saying it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Final

from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.text import Text

from .amqp import Phase, Status

__all__ = ["StatusLine", "logs_above"]

#: The logger of the reconnect loop's state lines (a status line or a header replaces them).
STATE_LOGGER: Final = "streamer.amqp.link"
_STYLES: Final = {Phase.REFUSED: "bold red", Phase.UNTRUSTED: "bold red"}


class _NotState(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != STATE_LOGGER


@contextlib.contextmanager
def logs_above(console: Console, level: int | None = None) -> Iterator[None]:
    """Send log records through rich on ``console`` (printed above a live display instead of
    into it), without the reconnect loop's state lines; at ``level`` and above when given.
    The root logger's handlers are put back afterwards."""
    root = logging.getLogger()
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    handler.addFilter(_NotState())
    if level is not None:
        handler.setLevel(level)
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = saved


def style_of(status: Status) -> str:
    """How a status reads at a glance: red when retrying cannot help, else yellow."""
    return _STYLES.get(status.phase, "yellow")


class StatusLine:
    """``async with StatusLine(status, console):`` shows ``status`` on ``console`` while it
    is not connected, redrawn every ``interval`` seconds; nothing when ``console`` is not a
    terminal.

    Args:
        status: the connection's state (a keeper's :attr:`~streamer.amqp.Keeper.status`).
        console: where to draw (stderr for commands whose stdout is data).
        interval: seconds between redraws (the "next in" countdown moves with it).
    """

    def __init__(self, status: Status, console: Console, *, interval: float = 0.1) -> None:
        self.status = status
        self.console = console
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._logs: contextlib.ExitStack | None = None

    async def __aenter__(self) -> StatusLine:
        if self.console.is_terminal:
            self._logs = contextlib.ExitStack()
            self._logs.enter_context(logs_above(self.console))
            self._task = asyncio.get_running_loop().create_task(self._draw())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._logs is not None:
            self._logs.close()

    async def _draw(self) -> None:
        live: Live | None = None
        status = self.status
        try:
            while True:
                if status.phase in (Phase.CONNECTED, Phase.STOPPED):
                    if live is not None:
                        live.stop()  # transient: the line is erased
                        live = None
                else:
                    line = Text(status.text(time.time()), style=style_of(status))
                    if live is None:
                        live = Live(
                            line,
                            console=self.console,
                            transient=True,
                            auto_refresh=False,
                            redirect_stdout=False,
                            redirect_stderr=False,
                        )
                        live.start()
                    live.update(line, refresh=True)
                await asyncio.sleep(self.interval)
        finally:
            if live is not None:
                live.stop()
