"""The ``streamer`` command.

Conventions shared by every subcommand: ``--url`` (also ``STREAMER_URL``), ``-e/--exchange``,
``--config FILE``, ``-v/--verbose``; errors are one line on stderr with exit code 2 for usage
and configuration errors, 1 for anything else; a traceback only with ``-v``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
import uvloop

from .consumer import Subscription
from .errors import ConfigError, StreamerError
from .publisher import Publisher
from .report import TERMINAL_STATES
from .settings import Settings, load_settings, mask_url
from .simulate import run_simulation

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("streamer")


def common_options(func: F) -> F:
    """--url, -e/--exchange, --config, -v: the options every subcommand takes."""
    func = click.option("-v", "--verbose", count=True, help="More logging (-vv: debug).")(func)
    func = click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False),
        envvar="STREAMER_CONFIG",
        help="TOML settings file.",
    )(func)
    func = click.option("-e", "--exchange", help="Topic exchange (default: streamer).")(func)
    func = click.option("--url", help="Broker URL (default: $STREAMER_URL or the local one).")(func)
    return func


def _settings(url: str | None, exchange: str | None, config: str | None) -> Settings:
    return load_settings(config, url=url, exchange=exchange)


def _run(verbose: int, main: Coroutine[Any, Any, int]) -> None:
    """Run a command's coroutine under uvloop; map errors to one line and an exit code."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = uvloop.run(main)
    except KeyboardInterrupt:
        code = 130
    except ConfigError as exc:
        if verbose:
            raise
        click.echo(f"streamer: configuration error: {exc}", err=True)
        code = 2
    except (StreamerError, OSError) as exc:
        if verbose:
            raise
        click.echo(f"streamer: error: {exc}", err=True)
        code = 1
    sys.exit(code)


def _config_errors(func: F) -> F:
    """Report config errors raised while building settings like the ones raised later."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            if kwargs.get("verbose"):
                raise
            click.echo(f"streamer: configuration error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="streamer")
def main() -> None:
    """Stream task status reports to RabbitMQ and watch them arrive.

    \b
    Example:
      streamer demo --url amqp://guest:guest@127.0.0.1:5672/
    """


@main.command()
@common_options
@click.option(
    "-s",
    "--subject",
    "subjects",
    multiple=True,
    help="Binding key, wildcards * and # allowed; repeatable (default: tasks.#).",
)
@click.option("--task", "task_ids", multiple=True, help="Only this task (binds tasks.<ID>).")
@click.option("-q", "--quiet", is_flag=True, help="Print routing keys only.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (for jq).")
@click.option("--count", type=click.IntRange(min=1), help="Exit after N messages.")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="Exit after S seconds."
)
@_config_errors
def listen(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    subjects: tuple[str, ...],
    task_ids: tuple[str, ...],
    quiet: bool,
    as_json: bool,
    count: int | None,
    timeout: float | None,
) -> None:
    """Print reports published to the exchange (like Pulp's listen.py).

    \b
    Example:
      streamer listen -q -s 'tasks.*'
    """
    settings = _settings(url, exchange, config)
    bindings = list(subjects) + [f"{settings.routing_prefix}.{t}" for t in task_ids]
    _run(verbose, _listen(settings, bindings or ["tasks.#"], quiet, as_json, count, timeout))


async def _listen(
    settings: Settings,
    bindings: list[str],
    quiet: bool,
    as_json: bool,
    count: int | None,
    timeout: float | None,
) -> int:
    seen = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            async with Subscription(settings, bindings) as sub:
                async for delivery in sub:
                    seen += 1
                    if quiet:
                        click.echo(delivery.routing_key)
                    elif as_json:
                        body = delivery.body.decode("utf-8", "replace")
                        click.echo(json.dumps({"routing_key": delivery.routing_key, "body": body}))
                    else:
                        click.echo(
                            f"{delivery.routing_key} {delivery.body.decode('utf-8', 'replace')}"
                        )
                    if count is not None and seen >= count:
                        break
    return 0


@main.command()
@common_options
@click.option(
    "--tasks",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Syncs to run; each spawns a publish.",
)
@click.option(
    "--updates",
    type=click.IntRange(min=10),
    default=420,
    show_default=True,
    help="Progress reports per task.",
)
@click.option("--seed", type=int, help="Random seed, for repeatable runs.")
@_config_errors
def demo(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    tasks: int,
    updates: int,
    seed: int | None,
) -> None:
    """Simulate syncs and publishes while a listener prints the routing keys it receives.

    \b
    Example:
      streamer demo --tasks 2
    """
    settings = _settings(url, exchange, config)
    _run(verbose, _demo(settings, tasks, updates, seed))


async def _demo(settings: Settings, tasks: int, updates: int, seed: int | None) -> int:
    received: dict[str, str] = {}
    count = 0

    async def listener(sub: Subscription) -> None:
        nonlocal count
        async for delivery in sub:
            count += 1
            click.echo(delivery.routing_key)
            received[delivery.routing_key] = delivery.properties.message_type or ""

    click.echo(f"broker {mask_url(settings.urls[0])}, exchange {settings.exchange!r}", err=True)
    async with Subscription(settings, [f"{settings.routing_prefix}.#"]) as sub:
        listening = asyncio.ensure_future(listener(sub))
        started = time.perf_counter()
        async with Publisher(settings=settings) as pub:
            ids = await run_simulation(pub.publish, tasks=tasks, updates=updates, seed=seed)
            await pub.flush(30)
            stats = pub.stats
        elapsed = time.perf_counter() - started
        keys = {f"{settings.routing_prefix}.{task_id}" for task_id in ids}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while any(received.get(k) not in TERMINAL_STATES for k in keys):
                    await asyncio.sleep(0.05)
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
    done = sum(received.get(k) in TERMINAL_STATES for k in keys)
    click.echo(
        f"\n{len(ids)} tasks, {stats.published} reports in {elapsed:.2f} s "
        f"({stats.published / elapsed:,.0f}/s): {stats.confirmed} confirmed, "
        f"{stats.coalesced} coalesced, {stats.dropped} dropped; listener received {count}, "
        f"final state of {done}/{len(ids)} tasks",
        err=True,
    )
    return 0 if done == len(ids) and stats.balanced else 1
