"""``streamer simulate``: Pulp-like workers (syncs that spawn publishes) through one publisher,
with a progress bar on a terminal and a summary at the end."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
import msgspec

from ..publisher import Publisher
from ..settings import Settings, mask_url
from ..simulate import MIN_UPDATES, Simulation, Tally, run_simulation
from ..stats import Stats
from ..view import RateWindow
from ._common import common_options, reach, run, settings_from, usage_error

F = TypeVar("F", bound=Callable[..., Any])


def tasks_option(help: str) -> Callable[[F], F]:
    """``--tasks``: how many syncs (each spawns a publish); demo and simulate take it."""
    return click.option(
        "--tasks", type=click.IntRange(min=1), default=2, show_default=True, help=help
    )


updates_option = click.option(
    "--updates",
    type=click.IntRange(min=MIN_UPDATES),
    default=420,
    show_default=True,
    help="Reports per finished task (fewer when it fails part-way).",
)
seed_option = click.option(
    "--seed", type=int, help="Random seed: same task ids and reports every run."
)


def in_flight(settings: Settings) -> int:
    """Reports a load generator may keep pending: what one confirm window takes at once."""
    return max(1, min(settings.confirm_window, settings.max_pending))


@click.command()
@common_options
@tasks_option("Repository syncs to run; each one that finishes spawns a publish.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Workers running at once (each runs a sync, then its publish).",
)
@updates_option
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Target reports/s over all workers; 0: as fast as the broker confirms.",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Chance that a task ends in error.",
)
@click.option(
    "--cancel-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Chance that a task is canceled.",
)
@seed_option
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve the publisher's Prometheus metrics on 127.0.0.1:PORT/metrics while running.",
)
def simulate(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    tasks: int,
    concurrency: int,
    updates: int,
    rate: float,
    error_rate: float,
    cancel_rate: float,
    seed: int | None,
    metrics_port: int | None,
) -> int:
    """Simulate Pulp workers: syncs that spawn publishes.

    Every report of every task is published, as fast as the broker confirms or at --rate.
    Shows a progress bar while running (when stderr is a terminal) and a summary at the
    end. Exits 0 when every report is accounted for and none was dropped, 1 otherwise; 3
    when no broker answers within connect_timeout (5 s), 4 when the broker refuses the
    credentials, 5 when its certificate is not trusted, before anything is simulated.

    \b
    Example:
      streamer simulate --tasks 50 --concurrency 8 --error-rate 0.05 --rate 20000
    """
    if error_rate + cancel_rate > 1:
        usage_error(
            f"--error-rate + --cancel-rate must be at most 1, got {error_rate} + {cancel_rate}"
        )
    simulation = Simulation(
        tasks=tasks,
        concurrency=concurrency,
        updates=updates,
        rate=rate,
        error_rate=error_rate,
        cancel_rate=cancel_rate,
        seed=seed,
    )
    settings = settings_from(url, exchange, config)
    if metrics_port is not None:
        settings = msgspec.structs.replace(settings, metrics_port=metrics_port)
    return run(verbose, _simulate(settings, simulation, progress=sys.stderr.isatty()))


async def _simulate(settings: Settings, simulation: Simulation, progress: bool) -> int:
    """Run the workers through one publisher; exit 1 if any report failed to make it.

    Coalesced reports do not fail the run (they are superseded by design), but the
    simulation throttles to the broker's confirms precisely so that there are none.
    """
    await reach(settings, "simulate", settings.connect_timeout)
    tally = Tally()
    async with Publisher(settings=settings) as pub:
        started = time.perf_counter()
        running = asyncio.ensure_future(
            run_simulation(
                pub.publish,
                simulation,
                throttle=pub.throttle,
                in_flight=in_flight(settings),
                tally=tally,
            )
        )
        try:
            if progress:
                await _progress_bar(running, tally)
            await running
        finally:
            if not running.done():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        await pub.flush(settings.close_timeout)
        elapsed = time.perf_counter() - started
    stats = pub.stats  # after close: anything still pending is now a counted drop
    ok = stats.balanced and stats.dropped == 0
    click.echo("\n".join(summary(settings, simulation, tally, stats, elapsed, ok)))
    return 0 if ok else 1


async def _progress_bar(running: asyncio.Future[Tally], tally: Tally) -> None:
    """Show tasks done, reports published and the recent rate on stderr until it ends.

    rich is imported here: it costs the other commands' start-up time otherwise.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("[bold]tasks"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[reports]:>12,} reports"),
        TextColumn("{task.fields[rate]:>10,.0f}/s"),
        TimeElapsedColumn(),
    )
    await asyncio.sleep(0)  # let the simulation start: it sets tally.planned
    window = RateWindow()
    window.sample(time.perf_counter(), tally.reports)
    with Progress(*columns, console=Console(stderr=True), auto_refresh=False) as bar:
        task = bar.add_task("simulate", total=tally.planned, reports=0, rate=0.0)
        while True:
            finished, _ = await asyncio.wait({running}, timeout=0.1)
            bar.update(
                task,
                completed=tally.done,
                total=tally.planned,
                reports=tally.reports,
                rate=window.sample(time.perf_counter(), tally.reports),
                refresh=True,
            )
            if finished:
                return


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "es" if noun.endswith("h") else "s")


def summary(
    settings: Settings,
    simulation: Simulation,
    tally: Tally,
    stats: Stats,
    elapsed: float,
    ok: bool,
) -> list[str]:
    """The end-of-run report: one screen, plain text (it is also parsed by tests and CI)."""
    outcomes = tally.outcomes
    reasons = ", ".join(f"{n:,} {why}" for why, n in stats.dropped_by_reason.items() if n)
    dropped = f"{stats.dropped:,} dropped" + (f" ({reasons})" if reasons else "")
    rate = f", {simulation.rate:,.0f}/s target" if simulation.rate else ""
    if ok:
        verdict = "OK: every report confirmed or coalesced, none dropped"
    elif not stats.balanced:
        verdict = "FAILED: the accounting does not balance"
    else:
        verdict = f"FAILED: {dropped}"
    return [
        f"simulated {_count(tally.syncs, 'sync')} and {_count(tally.publishes, 'publish')} on "
        f"{mask_url(settings.urls[0])}, exchange {settings.exchange!r} "
        f"({simulation.concurrency} workers, {simulation.updates} updates/task{rate})",
        f"  tasks      {tally.done:,} done: {outcomes['finished']:,} finished, "
        f"{outcomes['error']:,} error, {outcomes['canceled']:,} canceled",
        f"  reports    {stats.published:,} published: {stats.confirmed:,} confirmed, "
        f"{stats.coalesced:,} coalesced, {dropped}, {stats.pending:,} pending",
        f"  elapsed    {elapsed:.3f} s, {stats.published / elapsed if elapsed else 0:,.0f} "
        f"reports/s",
        f"  confirms   p50 {stats.confirm_latency_p50 * 1e3:.1f} ms, p99 "
        f"{stats.confirm_latency_p99 * 1e3:.1f} ms, max {stats.confirm_latency_max * 1e3:.1f} ms",
        f"  {verdict}",
    ]
