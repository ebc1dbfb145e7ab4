"""The live terminal view: every task on the exchange as a table that refreshes in place.

Reports can arrive by the thousand per second, so receiving and drawing are decoupled: each
delivery is only decoded and folded into a :class:`~streamer.board.Board` (cheap), and the
table is rebuilt from the board at most every ``refresh`` seconds. :func:`render` is a pure
function of the board, so tests check the picture without a broker or a terminal.

Everything a task sends (ids, types, tags, worker names) is shown through ``rich.text.Text``,
never as markup: a tag such as ``[bold]x[/bold]`` is printed as it is.

Exit codes when following one task (``task_id=...``), returned once it reaches a terminal
state: 0 ``finished``, 10 ``error``, 11 ``canceled``, 12 ``skipped``; 13 when ``stop`` was set
before the task ended. They stay clear of the CLI's own 1 (failure) and 2 (usage or
configuration error), so a script can tell "the task failed" from "watch could not run".
Without ``task_id`` the view runs until ``stop`` is set (or it is cancelled) and returns 0.

While not connected, the header starts with the connection's state (:class:`~streamer.amqp.
Status`: "connecting to ... — attempt 4, connection refused, next in 0.8 s"), and no log
text is written into the live table: records go above it, errors only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .amqp import Delivery, Phase, Status
from .board import Board, TaskState
from .history import Replay, Since, replay_for
from .receiver import VIEW_GATHER, Receiver, ReportReader
from .routing import routing_key
from .settings import Settings
from .statusline import logs_above, style_of
from .view import Counters, distinct_names, error_text, nest, select_rows

__all__ = ["EXIT_CODES", "EXIT_STOPPED", "render", "watch"]

EXIT_CODES: Final = {"finished": 0, "error": 10, "canceled": 11, "skipped": 12}
EXIT_STOPPED: Final = 13  # stop was set while the followed task was still going

STATE_STYLES: Final = {
    "waiting": "dim",
    "accepted": "cyan",
    "running": "bold blue",
    "suspended": "yellow",
    "skipped": "dim",
    "finished": "bold green",
    "error": "bold red",
    "canceled": "magenta",
    "stalled": "bold yellow",
}
_BAR_WIDTH: Final = 12
_ID_WIDTH: Final = 12
_TYPE_WIDTH: Final = 15
_NO_VALUE: Final = "—"


# -- rendering ----------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    """Compact h/m/s: an ETA or elapsed time must fit a narrow column."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return _NO_VALUE
    s = max(int(seconds + 0.5), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 100 * 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d"


def _shorten(value: str, width: int) -> str:
    """Cut long values at the end: the start of an id identifies it."""
    return value if len(value) <= width else value[: width - 1] + "…"


def _short_type(task_type: str | None) -> str:
    """The last dotted words that fit: ``a.b.repo.sync.sync`` shows as ``repo.sync.sync``."""
    if not task_type:
        return _NO_VALUE
    words = task_type.split(".")
    kept = words[-1]
    for word in reversed(words[:-1]):
        if len(word) + 1 + len(kept) > _TYPE_WIDTH:
            break
        kept = f"{word}.{kept}"
    return _shorten(kept, _TYPE_WIDTH)


def _elapsed(task: TaskState, now: float) -> float:
    """Since the task's own start time when it sent one, else since we first saw it."""
    end = task.ended
    return max((now if end is None else end) - task.started, 0.0)


def _bar(task: TaskState) -> Text:
    """A text bar (readable in logs and recorded output, unlike block glyph colours alone)."""
    style = STATE_STYLES.get(task.state, "")
    fraction = task.progress
    if fraction is None:
        return Text("·" * _BAR_WIDTH + "    ?", style="dim")
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(fraction * _BAR_WIDTH + 0.5)
    bar = Text()
    bar.append("█" * filled, style=style if task.finished else "blue")
    bar.append("░" * (_BAR_WIDTH - filled), style="dim")
    bar.append(f" {int(fraction * 100):3d}%")
    return bar


def _items(task: TaskState) -> str:
    if task.done is None or task.total is None:
        return _NO_VALUE
    return f"{task.done:,}/{task.total:,}"


def _rate(rate: float | None) -> str:
    if not rate:
        return _NO_VALUE
    return f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s"


def _header(board: Board, counters: Counters, status: Status | None, now: float) -> Text:
    by_state = board.by_state()
    header = Text()
    if status is not None and status.phase not in (Phase.CONNECTED, Phase.STOPPED):
        header.append(status.text(now), style=f"bold {style_of(status)}")
        header.append("  │  ")
    if counters.replaying is not None:
        header.append(f"replaying… {counters.replaying:.0%}", style="bold cyan")
        header.append("  │  ")
    header.append(f"{len(board):,} task{'' if len(board) == 1 else 's'}", style="bold")
    if by_state:
        header.append(": ")
        for n, (state, count) in enumerate(sorted(by_state.items())):
            if n:
                header.append(", ")
            header.append(f"{count:,} {state}", style=STATE_STYLES.get(state, ""))
    header.append(f"  │  {counters.rate:,.0f} reports/s, {counters.received:,} received")
    header.append("  │  ")
    header.append(
        f"{counters.malformed:,} malformed", style="bold red" if counters.malformed else ""
    )
    header.append(f", {board.gaps:,} gaps", style="yellow" if board.gaps else "")
    ignored = board.stale + board.duplicates
    if ignored:
        header.append(f", {ignored:,} stale/repeated")
    return header


def render(
    board: Board,
    *,
    counters: Counters,
    now: float,
    max_rows: int,
    status: Status | None = None,
) -> RenderableType:
    """The whole view (header line and task table) for the board as it is at ``now``; the
    connection's state leads the header while not connected.

    Pure: no I/O and no clock, so tests render it to a recording console.
    """
    table = Table(box=None, padding=(0, 1, 0, 0), header_style="bold", collapse_padding=True)
    table.add_column("task", no_wrap=True, min_width=_ID_WIDTH)
    table.add_column("type", no_wrap=True, min_width=4, max_width=_TYPE_WIDTH)
    table.add_column("state", no_wrap=True, min_width=9)
    table.add_column("progress", no_wrap=True, min_width=_BAR_WIDTH + 5)
    table.add_column("items", justify="right", no_wrap=True, min_width=9)
    table.add_column("rate", justify="right", no_wrap=True, min_width=7)
    table.add_column("eta", justify="right", no_wrap=True, min_width=6)
    table.add_column("elapsed", justify="right", no_wrap=True, min_width=7)
    # Wrapable as columns, so that they are the ones narrowed on a small terminal; their
    # cells are single lines cut with an ellipsis.
    table.add_column("worker", overflow="ellipsis", min_width=6, max_width=18)
    table.add_column("tags", overflow="ellipsis", min_width=8)
    table.add_column("error", overflow="ellipsis", min_width=8)
    rows, stalled, more_active, more_finished = select_rows(board, max_rows, now)
    workers = distinct_names([t.report.worker_name for t in rows if t.report.worker_name])
    for task, depth in nest(rows, board.families.parent):
        report = task.report
        state = "stalled" if task.task_id in stalled else task.state
        indent = "  " * (depth - 1) + "└ " if depth else ""
        silent = f"silent {_duration(now - task.last_seen)}" if state == "stalled" else None
        table.add_row(
            Text(indent + _shorten(task.task_id, _ID_WIDTH - len(indent))),
            Text(_short_type(report.task_type)),
            Text(state, style=STATE_STYLES.get(state, "")),
            _bar(task),
            Text(_items(task)),
            Text(_rate(task.rate)),
            Text(_duration(task.eta)),
            Text(_duration(_elapsed(task, now))),
            Text(workers.get(report.worker_name or "", _NO_VALUE), no_wrap=True),
            Text(", ".join(report.tags), no_wrap=True, overflow="ellipsis"),
            Text(error_text(report) or silent or "", style="red", no_wrap=True),
        )
    parts: list[RenderableType] = [_header(board, counters, status, now), table]
    if more_active or more_finished:
        parts.append(
            Text(f"… {more_active:,} more active, {more_finished:,} more finished", style="dim")
        )
    return Group(*parts)


def _line(task: TaskState, now: float) -> Text:
    """One plain line for logs: a followed task's state change."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    fraction = task.progress
    parts = [
        stamp,
        task.task_id,
        task.state,
        f"{int(fraction * 100)}%" if fraction is not None else "",
        _items(task) if task.done is not None else "",
        f"worker={task.report.worker_name}" if task.report.worker_name else "",
    ]
    error = error_text(task.report)
    if error is not None:
        parts.append(f"error={error}")
    return Text(" ".join(p for p in parts if p))


def _summary(board: Board, counters: Counters, now: float, status: Status | None = None) -> Text:
    """One plain line per refresh when not on a terminal and not following one task."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Text(f"{stamp} ").append_text(_header(board, counters, status, now))


# -- receiving ----------------------------------------------------------------------------


class _Watcher:
    """Folds batches of deliveries into the board; tells the view when the followed task has
    ended. Malformed bodies are counted by kind and never folded."""

    def __init__(
        self,
        task_id: str | None,
        on_change: Callable[[TaskState, float], None] | None = None,
        *,
        settings: Settings,
        replay: Replay | None = None,
        board: Board | None = None,
    ) -> None:
        self.task_id = task_id
        self.replay = replay
        #: The stream offset handed over last (set by the view to its receiver's).
        self.offset: Callable[[], int] = lambda: -1
        self.board = (
            board
            if board is not None
            else Board(max_seq_jump=settings.max_seq_jump, stall_after=settings.stall_after)
        )
        self.counters = Counters()
        self.reader = ReportReader(settings.max_body)
        self.ended = asyncio.Event()
        self.on_change = on_change
        self._last_state: str | None = None

    def fold(self, deliveries: list[Delivery], now: float) -> None:
        """Count, decode and apply a batch; note the followed task's state changes."""
        self.counters.received += len(deliveries)
        reports = self.reader(deliveries)
        self.counters.malformed = self.reader.malformed.total
        apply = self.board.apply
        followed = self.task_id
        replay = self.replay
        if replay is not None:
            self.counters.replaying = replay.progress(self.offset())
        for key, _, report in reports:
            if replay is None:
                apply(report, now)
            else:
                at = replay.when(key, report, now)
                if at is None:
                    continue
                apply(report, at, replayed=at != now)  # history: as it was then
            if report.task_id == followed:
                self._followed_changed(now)

    def on_batch(self, deliveries: list[Delivery]) -> None:
        """The receiver's callback."""
        self.fold(deliveries, time.time())

    def _followed_changed(self, now: float) -> None:
        assert self.task_id is not None
        task = self.board.get(self.task_id)
        if task is not None and task.state != self._last_state:
            self._last_state = task.state
            if self.on_change is not None:
                self.on_change(task, now)
            if task.finished:
                self.ended.set()


class _OnChange:
    """Prints a followed task's state changes as plain lines (non-terminal output)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, task: TaskState, now: float) -> None:
        self.console.print(_line(task, now), soft_wrap=True, highlight=False)


# -- the view -----------------------------------------------------------------------------


async def watch(
    settings: Settings,
    *,
    task_id: str | None = None,
    refresh: float = 0.25,
    max_rows: int = 30,
    console: Console | None = None,
    stop: asyncio.Event | None = None,
    since: Since | None = None,
    board: Board | None = None,
    ready: asyncio.Event | None = None,
    status: Status | None = None,
) -> int:
    """Show the tasks on the exchange until ``stop`` (or until the followed task ends).

    On a terminal the table refreshes in place (``rich.live.Live``) at most every
    ``refresh`` seconds. Otherwise, so that logs stay readable, it prints one line per state
    change of the followed task, or, without ``task_id``, one summary line per refresh in
    which something arrived (or the connection's state changed).

    Only reports published after the subscription is bound are seen (reports are never
    queued for late listeners), unless ``since`` reads the exchange's history first
    (:mod:`streamer.history`): then a task that ended before is shown as it ended. A caller
    that starts the tasks itself (``streamer demo``) passes ``ready``, set once the
    subscription is bound, and waits for it before publishing; and its own ``board``
    (reports are folded into it) to read what arrived once the view has stopped. A caller
    that wants to know whether a broker ever answered passes its own ``status``.

    Returns:
        the exit code: see :data:`EXIT_CODES` and :data:`EXIT_STOPPED`; 0 without
        ``task_id``.

    Raises:
        InvalidReport: ``task_id`` cannot be a routing-key word.
        NoHistory: ``since`` was given, and the exchange keeps no history.
        AuthenticationError, UntrustedCertificate: retrying cannot help.
    """
    console = console if console is not None else Console()
    stop = stop if stop is not None else asyncio.Event()
    status = status if status is not None else Status("watch")
    refresh = max(refresh, 0.01)
    prefix = settings.routing_prefix
    binding = routing_key(task_id, prefix) if task_id is not None else f"{prefix}.#"
    plain = not console.is_terminal
    watcher = _Watcher(
        task_id,
        _OnChange(console) if plain and task_id is not None else None,
        settings=settings,
        board=board,
    )
    # Probing the history (which may wait for the broker) and receiving run while the view
    # shows, so that the view shows the connection's state meanwhile.
    consuming = asyncio.ensure_future(_receive(watcher, settings, binding, since, status, ready))
    waiters: set[asyncio.Future[Any]] = {
        consuming,
        asyncio.ensure_future(stop.wait()),
        asyncio.ensure_future(watcher.ended.wait()),
    }
    try:
        if plain:
            await _plain(watcher, console, waiters, refresh, status)
        else:
            await _live(watcher, console, waiters, refresh, max_rows, status)
        if consuming.done():
            consuming.result()  # the receiver gave up (e.g. refused login): raise its error
    finally:
        for waiter in waiters:
            waiter.cancel()
        for waiter in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await waiter

    if task_id is None:
        return 0
    task = watcher.board.get(task_id)
    if task is None or not task.finished:
        return EXIT_STOPPED
    if plain:
        c = watcher.counters
        console.print(
            Text(
                f"{task_id} {task.state}: {c.received:,} received, {c.malformed:,} malformed, "
                f"{task.gaps:,} gaps"
            ),
            soft_wrap=True,
            highlight=False,
        )
    return EXIT_CODES.get(task.state, EXIT_CODES["error"])


async def _receive(
    watcher: _Watcher,
    settings: Settings,
    binding: str,
    since: Since | None,
    status: Status,
    ready: asyncio.Event | None,
) -> None:
    """Read the history first (when asked), then live, through the fast receiver without
    acks (a view only displays); it reconnects by itself, so the view survives broker
    restarts. Cancelling it closes the connection."""
    replay = await replay_for(settings, since, [binding], status=status)
    watcher.replay = replay
    receiver = Receiver(
        watcher.on_batch,
        settings=settings,
        bindings={"routing_keys": [binding]},
        no_ack=True,
        what="watch",
        gather=VIEW_GATHER,
        status=status,
    )
    watcher.offset = lambda: receiver.offset
    if replay is not None:
        receiver.read_stream(replay.stream, replay.since.offset)
        watcher.counters.replaying = replay.progress(-1)
    announcing = asyncio.ensure_future(_set_when(receiver.consuming, ready))
    try:
        await receiver.run()
    finally:
        receiver.stop()
        announcing.cancel()


async def _set_when(bound: asyncio.Event, ready: asyncio.Event | None) -> None:
    """Set ``ready`` once the receiver is bound (nothing to do without one)."""
    if ready is not None:
        await bound.wait()
        ready.set()


async def _tick(waiters: set[asyncio.Future[Any]], refresh: float) -> bool:
    """Sleep one refresh interval; True when one of the waiters is done (time to stop)."""
    done, _ = await asyncio.wait(waiters, timeout=refresh, return_when=asyncio.FIRST_COMPLETED)
    return bool(done)


async def _live(
    watcher: _Watcher,
    console: Console,
    waiters: set[asyncio.Future[Any]],
    refresh: float,
    max_rows: int,
    status: Status,
) -> None:
    """Redraw in place; refreshing is driven from here, never per message nor by a thread.

    Log records would scroll the table apart: while it shows, only errors are written, and
    above it (the header says what the reconnect loop's lines would)."""

    def frame() -> RenderableType:
        now = time.time()
        watcher.counters.sample(now)
        rows = min(max_rows, max(console.size.height - 6, 1))
        return render(
            watcher.board, counters=watcher.counters, now=now, max_rows=rows, status=status
        )

    with (
        logs_above(console, logging.ERROR),
        Live(frame(), console=console, auto_refresh=False, redirect_stderr=False) as live,
    ):
        while True:
            ended = await _tick(waiters, refresh)
            live.update(frame(), refresh=True)
            if ended:
                return


async def _plain(
    watcher: _Watcher,
    console: Console,
    waiters: set[asyncio.Future[Any]],
    refresh: float,
    status: Status,
) -> None:
    """Lines for logs: state changes come from the watcher, summaries from here; a change
    of the connection's state is a line too (with --task: the status alone)."""
    printed = 0
    phase = Phase.CONNECTING
    while True:
        ended = await _tick(waiters, refresh)
        now = time.time()
        watcher.counters.sample(now)
        counters = watcher.counters
        # (a first connection, as expected, is no news: only trouble and the end of it)
        moved = status.phase is not phase and status.phase is not Phase.STOPPED
        moved = moved and not (phase is Phase.CONNECTING and status.connected) and not ended
        phase = status.phase
        if watcher.task_id is None and (counters.received != printed or moved):
            printed = counters.received
            console.print(
                _summary(watcher.board, counters, now, status), soft_wrap=True, highlight=False
            )
        elif moved:
            stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            console.print(Text(f"{stamp} {status.text(now)}"), soft_wrap=True, highlight=False)
        if ended:
            return
