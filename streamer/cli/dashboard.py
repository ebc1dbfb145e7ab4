"""``streamer dashboard``: serve the live web page, the JSON API and ``/metrics``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from ..errors import ConfigError
from ..history import Since
from ..settings import mask_url
from ..topology import consumer_tables
from ._common import (
    common_options,
    face,
    on_signals,
    run,
    settings_from,
    since_option,
    usage_error,
)

if TYPE_CHECKING:
    from ..dashboard import Dashboard


@click.command()
@common_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback needs --token or --basic-auth.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8700, show_default=True, help="Port."
)
@click.option(
    "-b",
    "--binding",
    "bindings",
    multiple=True,
    metavar="KEY",
    help="Bind this routing key instead of <prefix>.# (e.g. 'tasks.*'); repeatable.",
)
@click.option(
    "--token",
    envvar="STREAMER_DASHBOARD_TOKEN",
    help="Require this bearer token (browsers: open /?token=...). Also $STREAMER_DASHBOARD_TOKEN.",
)
@click.option(
    "--basic-auth",
    metavar="USER:PASSWORD",
    envvar="STREAMER_DASHBOARD_BASIC_AUTH",
    help="Require HTTP basic auth. Also $STREAMER_DASHBOARD_BASIC_AUTH.",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Tasks kept on the board (the least recently updated go first).",
)
@click.option(
    "--history",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="History entries kept per task, shown on its page (one per run of reports in one state).",
)
@since_option(
    "Read the exchange's history from WHEN first ('first', 1h, 10m or an ISO time), then "
    "live; 'now' reads live only. Default: all of the history, when the exchange keeps one."
)
def dashboard(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    host: str,
    port: int,
    bindings: tuple[str, ...],
    token: str | None,
    basic_auth: str | None,
    max_tasks: int,
    history: int,
    since: Since | str | None,
) -> int:
    """Serve a live web page of the tasks on the exchange, with /metrics and a JSON API.

    Routes: / (the live table: progress, rate, ETA, filters), /tasks/<id> (one task and its
    recent reports), /api/tasks, /metrics (Prometheus), /healthz. The page is updated by
    server-sent events a few times a second, however fast reports arrive. When the exchange
    keeps a history (`streamer history enable`), it reads all of it first (or from --since),
    so a restarted dashboard shows what it showed before; otherwise only reports published
    after it starts are seen. --config may hold [[bindings]] and [queues.<name>] tables, as
    for consume.

    \b
    Examples:
      streamer dashboard
      streamer dashboard --host 0.0.0.0 --token "$(cat dashboard.token)" -b 'tasks.*'
    """
    from ..dashboard import Auth, Dashboard, is_loopback  # aiohttp only for this command

    file_bindings, queues, prefetch = consumer_tables(config)
    settings = settings_from(url, exchange, config, consumer=True)
    if bindings:
        file_bindings = [{"exchange": settings.exchange, "routing_keys": list(bindings)}]
        queues = None
    try:
        basic = Auth.parse_basic(basic_auth) if basic_auth is not None else None
        auth = Auth(token=token, basic=basic) if token is not None or basic is not None else None
    except ConfigError as exc:
        usage_error(str(exc))
    if isinstance(since, Since) and queues:
        usage_error("--since reads the exchange's history; it cannot read the [queues] of --config")
    if auth is None and not is_loopback(host):
        usage_error(
            f"--host {host} is not a loopback address: anyone who can reach it would see every "
            "task; give --token or --basic-auth (or STREAMER_DASHBOARD_TOKEN)"
        )
    board = Dashboard(
        settings,
        bindings=file_bindings,
        queues=queues,
        host=host,
        port=port,
        auth=auth,
        max_tasks=max_tasks,
        max_finished=min(1_000, max_tasks),
        history=history,
        prefetch=prefetch or 2_000,
        since=since if isinstance(since, Since) else None,
        replay=since != "now",
    )
    return run(verbose, _serve(board))


async def _serve(board: Dashboard) -> int:
    """Serve until SIGINT/SIGTERM (exit 0) or until the consumer gives up (its error)."""
    stop = asyncio.Event()
    with on_signals(stop.set):
        async with board:
            auth = f"; {board.auth.describe()} required" if board.auth is not None else ""
            click.echo(
                f"dashboard on {board.url} (exchange {board.settings.exchange!r} on "
                f"{mask_url(board.settings.urls[0])}{auth})",
                err=True,
            )
            stopping = asyncio.ensure_future(stop.wait())
            consuming = asyncio.ensure_future(board.wait())
            try:
                async with face(board.status):
                    await asyncio.wait({stopping, consuming}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if consuming.done():
                consuming.result()  # the consumer gave up: raise why
            else:
                consuming.cancel()
    return 0
