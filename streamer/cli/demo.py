"""``streamer demo``: simulated syncs and publishes, watched live as they run.

The view is ``streamer watch``'s: on a terminal its task table fills in place; in a pipe or
a log it is a summary line a second. Either way the run ends with the simulation's summary
and what the view received. (Every routing key as it arrives: ``streamer listen -q``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import click
from rich.console import Console

from ..amqp import Status
from ..board import Board
from ..errors import StreamerError
from ..publisher import Publisher
from ..settings import Settings, mask_url
from ..simulate import Simulation, Tally, run_simulation
from ..watch import watch
from ._common import NeverConnected, common_options, run, settings_from
from .simulate import in_flight, seed_option, summary, tasks_option, updates_option

# Seconds between the view's redraws: smooth on a terminal, a few lines in a log.
TERMINAL_REFRESH = 0.1
PLAIN_REFRESH = 1.0
# Seconds the view has, once every report is confirmed, to show every task's final state.
SETTLE = 10.0


@click.command()
@common_options
@tasks_option("Syncs to run; each spawns a publish.")
@updates_option
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=500.0,
    show_default=True,
    help="Reports/s over all tasks, slow enough to watch; 0: as fast as the broker confirms.",
)
@seed_option
def demo(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    tasks: int,
    updates: int,
    rate: float,
    seed: int | None,
) -> int:
    """Simulate syncs and publishes while a live task table shows them arrive.

    On a terminal the table (streamer watch's) fills in place; otherwise one summary line is
    printed a second (while not connected, with the connection's state). A summary of the
    run ends it. Exits 0 when every report was confirmed and the final state of every task
    arrived, 1 otherwise; 3 when no broker answered within twice connect_timeout, 4 when the
    broker refuses the credentials, 5 when its certificate is not trusted.

    \b
    Example:
      streamer demo --tasks 4
      streamer listen -q    # in another terminal: the routing key of every report
    """
    settings = settings_from(url, exchange, config)
    simulation = Simulation(tasks=tasks, concurrency=tasks, updates=updates, rate=rate, seed=seed)
    return run(verbose, _demo(settings, simulation, Console()))


async def _until_ready(ready: asyncio.Event, viewing: asyncio.Future[Any], patience: float) -> None:
    """Wait until the view is bound; raise what stopped it if it failed first.

    A receiver retries an unreachable broker for ever, which is right for a view but not for
    a demo: give up after a few connection attempts' worth of time.
    """
    bound: asyncio.Future[Any] = asyncio.ensure_future(ready.wait())
    await asyncio.wait({bound, viewing}, timeout=patience, return_when=asyncio.FIRST_COMPLETED)
    bound.cancel()
    if viewing.done():
        viewing.result()
        raise StreamerError("the view stopped before it was bound")


async def _demo(settings: Settings, simulation: Simulation, console: Console) -> int:
    broker = mask_url(settings.urls[0])
    click.echo(f"broker {broker}, exchange {settings.exchange!r}", err=True)
    board = Board(max_seq_jump=settings.max_seq_jump, stall_after=settings.stall_after)
    ready, stop = asyncio.Event(), asyncio.Event()
    refresh = TERMINAL_REFRESH if console.is_terminal else PLAIN_REFRESH
    status = Status("demo")
    viewing = asyncio.ensure_future(
        watch(
            settings,
            refresh=refresh,
            console=console,
            stop=stop,
            board=board,
            ready=ready,
            status=status,
        )
    )
    tally = Tally()
    try:
        patience = 2 * settings.connect_timeout
        await _until_ready(ready, viewing, patience)
        if not ready.is_set():
            raise NeverConnected(status, patience)
        started = time.perf_counter()
        async with Publisher(settings=settings) as pub:
            await run_simulation(
                pub.publish,
                simulation,
                throttle=pub.throttle,
                in_flight=in_flight(settings),
                tally=tally,
            )
            await pub.flush(30)
            elapsed = time.perf_counter() - started
        stats = pub.stats  # after close: anything still pending is now a counted drop

        def ended() -> int:
            tasks = (board.get(task_id) for task_id in tally.task_ids)
            return sum(task is not None and task.finished for task in tasks)

        with contextlib.suppress(TimeoutError):  # the view is told to stop after this
            async with asyncio.timeout(SETTLE):
                while ended() < len(tally.task_ids):
                    await asyncio.sleep(0.05)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await viewing  # its last frame shows every final state; it raises if it failed
    ok = stats.balanced and stats.dropped == 0
    done, total = ended(), len(tally.task_ids)
    seen = f"final state of {done:,} of {total:,} tasks"
    lines = summary(settings, simulation, tally, stats, elapsed, ok)
    lines.insert(-1, f"  watched    {board.received:,} reports, {seen}, {board.gaps:,} gaps")
    if done < total:
        lines.append(f"  FAILED: the {seen} arrived")
    click.echo("\n".join(lines))
    return 0 if ok and done == total else 1
