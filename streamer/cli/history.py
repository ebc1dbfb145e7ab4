"""``streamer history``: keep the exchange's reports for views started later."""

from __future__ import annotations

import click

from .. import history as stream
from ..settings import Settings
from ._common import common_options, run, settings_from

_AGE_HELP = "Keep reports this long: 90s, 10m, 1h, 7d (default: history_max_age, else 1h)."
_BYTES_HELP = (
    "Keep at most this much, the oldest going first: 500MB, 1GB, 2GiB "
    "(default: history_max_bytes, 1GB)."
)


@click.group()
def history() -> None:
    """Keep a history of the exchange, so that views started later see the past.

    The broker keeps every report published to the exchange in a stream queue
    (<exchange>.history, RabbitMQ 3.9 or later) for --max-age or up to --max-bytes, and
    writes it to disk: see the README for what it costs. Publishers do not change.
    `dashboard`, `watch` and `listen` read it with --since; a dashboard reads all of it by
    default.

    \b
    Examples:
      streamer history enable --max-age 1h --max-bytes 1GB
      streamer dashboard            # shows the last hour, then live
      streamer watch --task 8f3c --since first
    """


@history.command()
@common_options
@click.option("--max-age", metavar="DURATION", help=_AGE_HELP)
@click.option("--max-bytes", metavar="SIZE", help=_BYTES_HELP)
def enable(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    max_age: str | None,
    max_bytes: str | None,
) -> int:
    """Start keeping the exchange's reports (idempotent: running it again changes nothing)."""
    settings = settings_from(url, exchange, config)
    age = stream.parse_duration(max_age or settings.history_max_age or "1h", "--max-age")
    size = stream.parse_size(max_bytes or settings.history_max_bytes, "--max-bytes")
    return run(verbose, _enable(settings, age, size))


async def _enable(settings: Settings, age: float, size: int) -> int:
    await stream.enable(settings, age, size)
    click.echo(
        f"history {stream.stream_name(settings)!r} keeps exchange {settings.exchange!r}'s "
        f"reports for {age:,.0f} s, {size:,} bytes at most"
    )
    return 0


@history.command()
@common_options
def status(url: str | None, exchange: str | None, config: str | None, verbose: int) -> int:
    """Show what the history holds: messages, size, the oldest and newest report.

    Exits 1 when the exchange keeps no history.
    """
    return run(verbose, _status(settings_from(url, exchange, config)))


async def _status(settings: Settings) -> int:
    found = await stream.window(settings)
    if found is None:
        click.echo(
            f"exchange {settings.exchange!r} keeps no history; 'streamer history enable' "
            "starts one",
            err=True,
        )
        return 1
    click.echo(stream.describe(found, settings))
    return 0


@history.command()
@common_options
def disable(url: str | None, exchange: str | None, config: str | None, verbose: int) -> int:
    """Stop keeping reports and delete the history (what it holds is gone)."""
    return run(verbose, _disable(settings_from(url, exchange, config)))


async def _disable(settings: Settings) -> int:
    held = await stream.disable(settings)
    name = stream.stream_name(settings)
    if held is None:
        click.echo(f"exchange {settings.exchange!r} kept no history; nothing to do")
    else:
        click.echo(f"deleted history {name!r}")
    return 0
