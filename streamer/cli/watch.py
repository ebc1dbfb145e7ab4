"""``streamer watch``: the tasks on the exchange live in a terminal (or as lines in a log)."""

from __future__ import annotations

import asyncio

import click

from ..amqp import Status
from ..history import Since
from ..settings import Settings
from ._common import (
    common_options,
    deadline_passed,
    on_signals,
    run,
    settings_from,
    since_option,
    task_key,
)


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
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Stop after S seconds: exit 13 with --task (it had not ended), else 0; "
    "3 if no broker answered by then.",
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
    timeout: float | None,
    since: Since | str | None,
) -> int:
    """Show the tasks on the exchange live: state, progress, rate, ETA.

    On a terminal a table refreshes in place; otherwise (a pipe, a log) one line is printed
    per state change of the --task, or a summary line per refresh. With --task the exit code
    is the task's outcome: 0 finished, 10 error, 11 canceled, 12 skipped (13 when stopped
    by SIGTERM, Ctrl-C or --timeout first); without it, SIGTERM, Ctrl-C and --timeout stop it
    with 0. Whatever the mode: 3 when --timeout passed and no broker ever answered, 4 when the
    broker refuses the credentials, 5 when its certificate is not trusted. While not
    connected, the header (or a line, in a log) says so and why. Only reports
    published after it starts are seen, unless --since replays the exchange's history
    (`streamer history`) first: a task that ended before is shown as it ended, and --task
    exits at once with its outcome.

    \b
    Example:
      streamer watch
      streamer watch --task 8f3c && echo synced
      streamer watch --task 8f3c --timeout 600   # 13: still running; 3: no broker
      streamer watch --since 10m
      streamer watch --task 8f3c --since first
    """
    settings = settings_from(url, exchange, config)
    if task_id is not None:
        task_key("--task", task_id, settings)
    start = since if isinstance(since, Since) else None
    return run(verbose, _watch(settings, task_id, refresh, max_tasks, start, timeout))


async def _watch(
    settings: Settings,
    task_id: str | None,
    refresh: float,
    max_rows: int,
    since: Since | None,
    timeout: float | None,
) -> int:
    from ..watch import watch as watch_tasks  # rich costs the other commands' start-up time

    stop = asyncio.Event()
    status = Status("watch")
    timer = asyncio.get_running_loop().call_later(timeout, stop.set) if timeout else None
    try:
        with on_signals(stop.set):  # SIGINT and SIGTERM: a clean stop, as for every command
            code = await watch_tasks(
                settings,
                task_id=task_id,
                refresh=refresh,
                max_rows=max_rows,
                stop=stop,
                since=since,
                status=status,
            )
    finally:
        if timer is not None:
            timer.cancel()
    deadline_passed(status, timeout)
    return code
