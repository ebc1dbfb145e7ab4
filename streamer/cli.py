"""The ``streamer`` command.

Conventions shared by every subcommand: ``--url`` (also ``STREAMER_URL``), ``-e/--exchange``,
``--config FILE``, ``-v/--verbose``; errors are one line on stderr with exit code 2 for usage
and configuration errors, 1 for anything else; a traceback only with ``-v``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

import click
import msgspec
import uvloop

from .consumer import Consumer, Message
from .errors import ConfigError, StreamerError
from .publisher import Publisher
from .report import TERMINAL_STATES
from .settings import Settings, load_settings, mask_url, read_config
from .simulate import MIN_UPDATES, Simulation, Tally, run_simulation
from .stats import Stats

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


class _UsageError(click.UsageError):
    """A usage error shown as one line (DESIGN: errors are one clear line), exit code 2."""

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"streamer: usage error: {self.format_message()}{hint}", err=True)


class _OneLineErrors(click.Command):
    """A command whose bad options are reported by :class:`_UsageError`."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            if isinstance(exc, _UsageError):
                raise
            raise _UsageError(exc.format_message(), exc.ctx) from None


def _in_flight(settings: Settings) -> int:
    """Reports a load generator may keep pending: what one confirm window takes at once."""
    return max(1, min(settings.confirm_window, settings.max_pending))


class _Group(click.Group):
    """Every subcommand reports bad options as one line (exit code 2)."""

    command_class = _OneLineErrors


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
    help="Binding key, wildcards * (one word) and # (any words); repeatable "
    "(default: <prefix>.#, i.e. tasks.#).",
)
@click.option(
    "-a",
    "--address",
    help="Broker host; replaces the host of the configured URL (credentials and vhost kept).",
)
@click.option(
    "-p",
    "--port",
    type=click.IntRange(1, 65535),
    help="Broker port; replaces the port of the configured URL.",
)
@click.option(
    "--task",
    "task_ids",
    multiple=True,
    metavar="ID",
    help="Only this task (binds <prefix>.<ID>); repeatable, adds to -s.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print routing keys only.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per line (for jq): {"routing_key": ..., "report": {...}}.',
)
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Exit after N messages.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Exit after S seconds.",
)
@_config_errors
def listen(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    subjects: tuple[str, ...],
    address: str | None,
    port: int | None,
    task_ids: tuple[str, ...],
    quiet: bool,
    as_json: bool,
    count: int | None,
    timeout: float | None,
) -> None:
    """Print reports published to the exchange (a superset of Pulp's listen.py).

    Default output is one line per report: the routing key, a space, the JSON body. A private
    queue (exclusive, auto-deleted, capped at 10,000 messages) is bound to each key; the
    listener reconnects by itself after a broker restart. Malformed messages are skipped and
    counted (a summary goes to stderr at exit). Exits 0 on Ctrl-C/SIGTERM, after --count
    messages or after --timeout seconds.

    \b
    Examples:
      streamer listen -q -s 'tasks.*'
      streamer listen -a broker.example.com -p 5672 -e pulp
      streamer listen --task 8f3c --json | jq .report.state
    """
    from .errors import InvalidReport
    from .routing import routing_key

    settings = _settings(url, exchange, config)
    if address is not None or port is not None:
        settings = _settings(_replace_host(settings.urls[0], address, port), exchange, config)
    keys = list(subjects)
    for task_id in task_ids:
        try:
            keys.append(routing_key(task_id, settings.routing_prefix))
        except InvalidReport as exc:
            raise _UsageError(f"--task: {exc}", click.get_current_context()) from None
    keys = list(dict.fromkeys(keys)) or [f"{settings.routing_prefix}.#"]
    mode = "quiet" if quiet else "json" if as_json else "plain"
    _run(verbose, _listen(settings, keys, mode, count, timeout))


def _replace_host(url: str, address: str | None, port: int | None) -> str:
    """``url`` with its host and/or port replaced (user, password, vhost and query kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = address if address is not None else parts.hostname or "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    new_port = port if port is not None else parts.port
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = (f"{userinfo}@" if userinfo else "") + host + (f":{new_port}" if new_port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def _listen(
    settings: Settings,
    keys: list[str],
    mode: str,
    count: int | None,
    timeout: float | None,
) -> int:
    """Print every report on ``keys`` through a reconnecting :class:`Consumer`."""
    import os
    import signal

    import msgspec

    from .consumer import MALFORMED, Consumer
    from .errors import HaltConsumer

    seen = 0
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        consumer.stop(0)

    async def show(message: Message) -> None:
        nonlocal seen
        if stopping:
            return  # already in the inbox when we were told to stop
        if mode == "quiet":
            line = message.routing_key
        elif mode == "json":
            line = msgspec.json.encode(
                {"routing_key": message.routing_key, "report": message.report}
            ).decode()
        else:
            line = f"{message.routing_key} {message.body.decode('utf-8', 'replace')}"
        try:
            click.echo(line)  # click.echo flushes: one line at a time down a pipe
        except BrokenPipeError:  # e.g. `| head`: the reader has gone, so have we
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            stop()
            return
        seen += 1
        if count is not None and seen >= count:
            raise HaltConsumer(0, f"--count {count} reached")

    consumer = Consumer(
        show,
        bindings=[{"exchange": settings.exchange, "routing_keys": keys}],
        settings=settings,
        prefetch=500,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    timer = loop.call_later(timeout, stop) if timeout is not None else None
    try:
        code = await consumer.run()
    finally:
        if timer is not None:
            timer.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    skipped = {kind: consumer.counters[kind] for kind in MALFORMED if consumer.counters[kind]}
    if skipped:
        total = sum(skipped.values())
        kinds = ", ".join(f"{kind}: {n}" for kind, n in skipped.items())
        click.echo(
            f"listen: skipped {total} malformed message{'' if total == 1 else 's'} ({kinds})",
            err=True,
        )
    return code


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
                pub.publish, simulation, throttle=pub.throttle, in_flight=_in_flight(settings)
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


@main.command()
@common_options
@click.option(
    "--tasks",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Repository syncs to run; each one that finishes spawns a publish.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Workers running at once (each runs a sync, then its publish).",
)
@click.option(
    "--updates",
    type=click.IntRange(min=MIN_UPDATES),
    default=420,
    show_default=True,
    help="Reports per finished task (fewer when it fails part-way).",
)
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
@click.option("--seed", type=int, help="Random seed: same task ids and reports every run.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve the publisher's Prometheus metrics on 127.0.0.1:PORT/metrics while running.",
)
@_config_errors
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
) -> None:
    """Simulate Pulp workers: syncs that spawn publishes.

    Every report of every task is published, as fast as the broker confirms or at --rate.
    Shows a progress bar while running (when stderr is a terminal) and a summary at the
    end. Exits 0 when every report is accounted for and none was dropped, 1 otherwise.

    \b
    Example:
      streamer simulate --tasks 50 --concurrency 8 --error-rate 0.05 --rate 20000
    """
    if error_rate + cancel_rate > 1:
        raise _UsageError(
            f"--error-rate + --cancel-rate must be at most 1, got {error_rate} + {cancel_rate}",
            click.get_current_context(),
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
    settings = _settings(url, exchange, config)
    if metrics_port is not None:
        settings = msgspec.structs.replace(settings, metrics_port=metrics_port)
    _run(verbose, _simulate(settings, simulation, progress=sys.stderr.isatty()))


async def _simulate(settings: Settings, simulation: Simulation, progress: bool) -> int:
    """Run the workers through one publisher; exit 1 if any report failed to make it.

    Coalesced reports do not fail the run (they are superseded by design), but the
    simulation throttles to the broker's confirms precisely so that there are none.
    """
    tally = Tally()
    async with Publisher(settings=settings) as pub:
        started = time.perf_counter()
        run = asyncio.ensure_future(
            run_simulation(
                pub.publish,
                simulation,
                throttle=pub.throttle,
                in_flight=_in_flight(settings),
                tally=tally,
            )
        )
        try:
            if progress:
                await _progress_bar(run, tally)
            await run
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
        await pub.flush(settings.close_timeout)
        elapsed = time.perf_counter() - started
    stats = pub.stats  # after close: anything still pending is now a counted drop
    ok = stats.balanced and stats.dropped == 0
    click.echo("\n".join(_summary(settings, simulation, tally, stats, elapsed, ok)))
    return 0 if ok else 1


async def _progress_bar(run: asyncio.Future[Tally], tally: Tally) -> None:
    """Show tasks done, reports published and the recent rate on stderr until ``run`` ends.

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
    samples: deque[tuple[float, int]] = deque([(time.perf_counter(), tally.reports)])
    with Progress(*columns, console=Console(stderr=True), auto_refresh=False) as bar:
        task = bar.add_task("simulate", total=tally.planned, reports=0, rate=0.0)
        while True:
            finished, _ = await asyncio.wait({run}, timeout=0.1)
            now = time.perf_counter()
            samples.append((now, tally.reports))
            while len(samples) > 2 and now - samples[0][0] > 1.0:
                samples.popleft()  # the rate over the last second
            first_t, first_n = samples[0]
            rate = (tally.reports - first_n) / (now - first_t) if now > first_t else 0.0
            bar.update(
                task,
                completed=tally.done,
                total=tally.planned,
                reports=tally.reports,
                rate=rate,
                refresh=True,
            )
            if finished:
                return


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "es" if noun.endswith("h") else "s")


def _summary(
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


# Tables of a --config file that describe the consumer, not the settings (fedora-messaging's).
_CONSUMER_TABLES: Final = ("bindings", "queues", "qos")


def _consumer_config(
    config: str | None,
) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None, int | None]:
    """The consumer's own tables of a --config file: ``[[bindings]]``, ``[queues.*]``, ``[qos]``.

    The rest of the file is settings, read by ``load_settings(..., sections=...)``.
    """
    if config is None:
        return None, None, None
    data = read_config(config)
    bindings = data.get("bindings")
    queues = data.get("queues")
    qos = data.get("qos", {})
    if bindings is not None and not isinstance(bindings, list):
        raise ConfigError(f"config file {config!r}: bindings must be [[bindings]] tables")
    if queues is not None and not isinstance(queues, dict):
        raise ConfigError(f"config file {config!r}: queues must be [queues.<name>] tables")
    if not isinstance(qos, dict) or set(qos) - {"prefetch_count"}:
        raise ConfigError(f"config file {config!r}: [qos] takes prefetch_count only")
    prefetch = qos.get("prefetch_count")
    if prefetch is not None and (not isinstance(prefetch, int) or prefetch < 1):
        raise ConfigError(f"config file {config!r}: prefetch_count must be a positive integer")
    return bindings, queues, prefetch


def _consumer_settings(url: str | None, exchange: str | None, config: str | None) -> Settings:
    """Settings from the file's settings part (its consumer tables are skipped)."""
    return load_settings(config, url=url, exchange=exchange, sections=_CONSUMER_TABLES)


@main.command()
@common_options
@click.option(
    "--callback",
    "callback_path",
    required=True,
    metavar="MODULE:OBJECT",
    help="Function or class to call with each report (a class is instantiated once).",
)
@click.option(
    "-s",
    "--routing-key",
    "routing_keys",
    multiple=True,
    help="Bind this key on the exchange, instead of the config's bindings; repeatable.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    help="Unacknowledged messages in flight (default: [qos] prefetch_count, else 100).",
)
@click.option(
    "--halt-on-error", is_flag=True, help="Stop (exit 1) when the callback raises an error."
)
@_config_errors
def consume(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    callback_path: str,
    routing_keys: tuple[str, ...],
    prefetch: int | None,
    halt_on_error: bool,
) -> None:
    """Call a Python function or class for every report (like fedora-messaging consume).

    The callback raises streamer.Nack to requeue a message, streamer.Drop to reject it and
    streamer.HaltConsumer(exit_code) to stop with that exit code. Reconnects by itself after
    a broker restart; SIGINT/SIGTERM stop it cleanly (exit 0). --config may also hold
    [[bindings]], [queues.<name>] and [qos] tables (see docs/consumers.md).

    \b
    Example:
      streamer consume --callback mypackage.handlers:on_report -s 'tasks.*'
    """
    from .consumer import Consumer, import_callback

    bindings, queues, qos_prefetch = _consumer_config(config)
    settings = _consumer_settings(url, exchange, config)
    if routing_keys:
        bindings = [{"exchange": settings.exchange, "routing_keys": list(routing_keys)}]
        queues = None
    consumer = Consumer(
        import_callback(callback_path),
        bindings=bindings,
        queues=queues,
        settings=settings,
        prefetch=prefetch or qos_prefetch or 100,
        halt_on_error=halt_on_error,
    )
    _run(verbose, _consume(consumer))


async def _consume(consumer: Any) -> int:
    """Run the consumer; SIGINT and SIGTERM stop it cleanly (exit 0, unacked go back)."""
    import signal

    from .errors import CallbackError

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, consumer.stop)
    click.echo(
        f"consuming from {mask_url(consumer.settings.urls[0])}, "
        f"exchange {consumer.settings.exchange!r}",
        err=True,
    )
    try:
        return int(await consumer.run())
    except CallbackError as exc:
        click.echo(f"streamer: {exc}", err=True)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@main.command()
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
@_config_errors
def watch(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    task_id: str | None,
    refresh: float,
    max_tasks: int,
) -> None:
    """Show the tasks on the exchange live: state, progress, rate, ETA.

    On a terminal a table refreshes in place; otherwise (a pipe, a log) one line is printed
    per state change of the --task, or a summary line per refresh. With --task the exit code
    is the task's outcome: 0 finished, 10 error, 11 canceled, 12 skipped (130 on Ctrl-C).
    Only reports published after it starts are seen.

    \b
    Example:
      streamer watch
      streamer watch --task 8f3c && echo synced
    """
    from .errors import InvalidReport
    from .routing import routing_key
    from .watch import watch as watch_tasks  # rich costs the other commands' start-up time

    settings = _settings(url, exchange, config)
    if task_id is not None:
        try:
            routing_key(task_id, settings.routing_prefix)
        except InvalidReport as exc:
            raise _UsageError(f"--task: {exc}", click.get_current_context()) from None
    _run(verbose, watch_tasks(settings, task_id=task_id, refresh=refresh, max_rows=max_tasks))


@main.command()
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
    help="Recent reports kept per task, shown on its page.",
)
@_config_errors
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
) -> None:
    """Serve a live web page of the tasks on the exchange, with /metrics and a JSON API.

    Routes: / (the live table: progress, rate, ETA, filters), /tasks/<id> (one task and its
    recent reports), /api/tasks, /metrics (Prometheus), /healthz. The page is updated by
    server-sent events a few times a second, however fast reports arrive. Only reports
    published after it starts are seen. --config may hold [[bindings]] and [queues.<name>]
    tables, as for consume.

    \b
    Examples:
      streamer dashboard
      streamer dashboard --host 0.0.0.0 --token "$(cat dashboard.token)" -b 'tasks.*'
    """
    from .dashboard import Auth, Dashboard, is_loopback  # aiohttp only for this command

    ctx = click.get_current_context()
    file_bindings, queues, prefetch = _consumer_config(config)
    settings = load_settings(config, url=url, exchange=exchange, sections=_CONSUMER_TABLES)
    if bindings:
        file_bindings = [{"exchange": settings.exchange, "routing_keys": list(bindings)}]
        queues = None
    try:
        basic = Auth.parse_basic(basic_auth) if basic_auth is not None else None
        auth = Auth(token=token, basic=basic) if token is not None or basic is not None else None
    except ConfigError as exc:
        raise _UsageError(str(exc), ctx) from None
    if auth is None and not is_loopback(host):
        raise _UsageError(
            f"--host {host} is not a loopback address: anyone who can reach it would see every "
            "task; give --token or --basic-auth (or STREAMER_DASHBOARD_TOKEN)",
            ctx,
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
    )
    _run(verbose, _dashboard(board))


async def _dashboard(board: Any) -> int:
    """Serve until SIGINT/SIGTERM (exit 0) or until the consumer gives up (its error)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
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
                await asyncio.wait({stopping, consuming}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if consuming.done():
                consuming.result()  # the consumer gave up: raise why
            else:
                consuming.cancel()
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
