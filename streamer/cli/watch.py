"""``streamer watch``: the tasks on the exchange live in a terminal (or as lines in a log)."""

from __future__ import annotations

import asyncio

import click

from ..history import Since
from ..settings import Settings
from ._common import common_options, on_signals, run, settings_from, since_option, task_key


@click.command()
@common_options
@click.option(
    "--task",
    "task_id",
    metavar="ID",
    help="Follow this task only (binds tasks.<ID>) and exit when it ends: "
    "0 finished, 10 error, 11 canceled, 12 skipped.",
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.05),
    default=0.25,
    show_default=True,
    help="Seconds between redraws (and between summary lines when not on a terminal).",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Table rows shown at most (active tasks first, then recently finished).",
)
@since_option(
    "Replay the exchange's history from WHEN first: 'first', a duration back from now "
    "(10m, 1h) or an ISO time; then go on live. Needs 'streamer history enable'."
)
def watch(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    task_id: str | None,
    refresh: float,
    max_tasks: int,
    since: Since | str | None,
) -> int:
    """Show the tasks on the exchange live: state, progress, rate, ETA.

    On a terminal a table refreshes in place; otherwise (a pipe, a log) one line is printed
    per state change of the --task, or a summary line per refresh. With --task the exit code
    is the task's outcome: 0 finished, 10 error, 11 canceled, 12 skipped (13 when stopped
    by SIGTERM or Ctrl-C first); without it, SIGTERM and Ctrl-C stop it with 0. Only reports
    published after it starts are seen, unless --since replays the exchange's history
    (`streamer history`) first: a task that ended before is shown as it ended, and --task
    exits at once with its outcome.

    \b
    Example:
      streamer watch
      streamer watch --task 8f3c && echo synced
      streamer watch --since 10m
      streamer watch --task 8f3c --since first
    """
    settings = settings_from(url, exchange, config)
    if task_id is not None:
        task_key("--task", task_id, settings)
    start = since if isinstance(since, Since) else None
    return run(verbose, _watch(settings, task_id, refresh, max_tasks, start))


async def _watch(
    settings: Settings, task_id: str | None, refresh: float, max_rows: int, since: Since | None
) -> int:
    from ..watch import watch as watch_tasks  # rich costs the other commands' start-up time

    stop = asyncio.Event()
    with on_signals(stop.set):  # SIGINT and SIGTERM: a clean stop, as for every command
        return await watch_tasks(
            settings, task_id=task_id, refresh=refresh, max_rows=max_rows, stop=stop, since=since
        )
