"""``streamer demo``: simulated syncs and publishes while a listener prints what arrives."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import click

from ..consumer import Consumer, Message
from ..errors import StreamerError
from ..publisher import Publisher
from ..report import TERMINAL_STATES
from ..settings import Settings, mask_url
from ..simulate import Simulation, run_simulation
from ._common import common_options, run, settings_from
from .simulate import in_flight, seed_option, tasks_option, updates_option


@click.command()
@common_options
@tasks_option("Syncs to run; each spawns a publish.")
@updates_option
@seed_option
def demo(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    tasks: int,
    updates: int,
    seed: int | None,
) -> int:
    """Simulate syncs and publishes while a listener prints the routing keys it receives.

    \b
    Example:
      streamer demo --tasks 2
    """
    settings = settings_from(url, exchange, config)
    return run(verbose, _demo(settings, tasks, updates, seed))


async def _until_consuming(
    consumer: Consumer, running: asyncio.Future[Any], settings: Settings
) -> None:
    """Wait until ``consumer`` is bound and consuming; raise what stopped it if it failed.

    A consumer retries an unreachable broker for ever, which is right for a service but not
    for a demo: give up after a few connection attempts' worth of time.
    """
    ready: asyncio.Future[Any] = asyncio.ensure_future(consumer.consuming.wait())
    patience = 2 * settings.connect_timeout
    await asyncio.wait({ready, running}, timeout=patience, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if running.done():
        running.result()
        raise StreamerError("the listener stopped before it was bound")
    if not consumer.consuming.is_set():
        raise StreamerError(
            f"no broker answered at {mask_url(settings.urls[0])} within {patience:.0f} s"
        )


async def _demo(settings: Settings, tasks: int, updates: int, seed: int | None) -> int:
    received: dict[str, str] = {}
    count = 0

    async def on_message(message: Message) -> None:
        nonlocal count
        count += 1
        click.echo(message.routing_key)
        received[message.routing_key] = message.report.state

    click.echo(f"broker {mask_url(settings.urls[0])}, exchange {settings.exchange!r}", err=True)
    listener = Consumer(
        on_message, bindings={"routing_keys": [f"{settings.routing_prefix}.#"]}, settings=settings
    )
    listening = asyncio.ensure_future(listener.run())
    try:
        await _until_consuming(listener, listening, settings)
        started = time.perf_counter()
        async with Publisher(settings=settings) as pub:
            simulation = Simulation(tasks=tasks, concurrency=tasks, updates=updates, seed=seed)
            tally = await run_simulation(
                pub.publish, simulation, throttle=pub.throttle, in_flight=in_flight(settings)
            )
            ids = tally.task_ids
            await pub.flush(30)
            stats = pub.stats
        elapsed = time.perf_counter() - started
        keys = {f"{settings.routing_prefix}.{task_id}" for task_id in ids}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while any(received.get(k) not in TERMINAL_STATES for k in keys):
                    await asyncio.sleep(0.05)
    finally:
        listener.stop()
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
