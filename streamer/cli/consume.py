"""``streamer consume``: call a Python function or class for every report (fedora-messaging's
``consume``)."""

from __future__ import annotations

import click

from ..callback import import_callback
from ..consumer import Consumer
from ..errors import CallbackError
from ..settings import mask_url
from ..topology import consumer_tables
from ._common import common_options, face, on_signals, run, settings_from


@click.command()
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
def consume(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    callback_path: str,
    routing_keys: tuple[str, ...],
    prefetch: int | None,
    halt_on_error: bool,
) -> int:
    """Call a Python function or class for every report (like fedora-messaging consume).

    The callback raises streamer.Nack to requeue a message, streamer.Drop to reject it and
    streamer.HaltConsumer(exit_code) to stop with that exit code. Reconnects by itself after
    a broker restart; SIGINT/SIGTERM stop it cleanly (exit 0). --config may also hold
    [[bindings]], [queues.<name>] and [qos] tables (see docs/consumers.md).

    \b
    Example:
      streamer consume --callback mypackage.handlers:on_report -s 'tasks.*'
    """
    bindings, queues, qos_prefetch = consumer_tables(config)
    settings = settings_from(url, exchange, config, consumer=True)
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
    return run(verbose, _consume(consumer))


async def _consume(consumer: Consumer) -> int:
    """Run the consumer; SIGINT and SIGTERM stop it cleanly (exit 0, unacked go back)."""
    click.echo(
        f"consuming from {mask_url(consumer.settings.urls[0])}, "
        f"exchange {consumer.settings.exchange!r}",
        err=True,
    )
    try:
        with on_signals(consumer.stop):
            async with face(consumer.status):
                return int(await consumer.run())
    except CallbackError as exc:
        click.echo(f"streamer: {exc}", err=True)
        return 1
