"""``streamer listen``: print every report on the exchange (a superset of Pulp's listen.py)."""

from __future__ import annotations

import os
import sys

import click
import msgspec

from ..amqp import Delivery, Status
from ..history import Since, replay_for
from ..receiver import VIEW_GATHER, Receiver, ReportReader
from ..settings import Settings, replace_host
from ._common import (
    common_options,
    deadline_passed,
    face,
    on_signals,
    run,
    settings_from,
    since_option,
    task_key,
)

encode_json = msgspec.json.Encoder().encode


@click.command()
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
    help="Exit after S seconds (exit 3 if no broker answered by then).",
)
@since_option(
    "Print the exchange's history first, from WHEN: 'first', a duration back from now "
    "(5m, 1h) or an ISO time; then go on live. Needs 'streamer history enable'."
)
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
    since: Since | str | None,
) -> int:
    """Print reports published to the exchange (a superset of Pulp's listen.py).

    Default output is one line per report: the routing key, a space, the JSON body. A private
    queue (exclusive, auto-deleted, capped at 10,000 messages) is bound to each key; the
    listener reconnects by itself after a broker restart. Malformed messages are skipped and
    counted (a summary goes to stderr at exit). Exits 0 on Ctrl-C/SIGTERM, after --count
    messages or after --timeout seconds (3 if it never connected by then; 4 when the broker
    refuses the credentials, 5 when its certificate is not trusted). While not connected, a
    status line shows on stderr when that is a terminal. With --since it reads the
    exchange's history (`streamer history`) from that time, then live from the same stream:
    nothing twice, nothing missed in between.

    \b
    Examples:
      streamer listen -q -s 'tasks.*'
      streamer listen --since 5m --task 8f3c
      streamer listen -a broker.example.com -p 5672 -e pulp
      streamer listen --task 8f3c --json | jq .report.state
    """
    settings = settings_from(url, exchange, config)
    if address is not None or port is not None:
        settings = settings_from(replace_host(settings.urls[0], address, port), exchange, config)
    keys = list(subjects) + [task_key("--task", task_id, settings) for task_id in task_ids]
    keys = list(dict.fromkeys(keys)) or [f"{settings.routing_prefix}.#"]
    mode = "quiet" if quiet else "json" if as_json else "plain"
    start = since if isinstance(since, Since) else None
    return run(verbose, _listen(settings, keys, mode, count, timeout, start))


async def _listen(
    settings: Settings,
    keys: list[str],
    mode: str,
    count: int | None,
    timeout: float | None,
    since: Since | None = None,
) -> int:
    """Print every report on ``keys`` through the fast receiver (no acks: it only displays;
    reading the history, acks, as a stream requires them)."""
    status = Status("listen")
    async with face(status):
        await _receive(settings, keys, mode, count, timeout, since, status)
    deadline_passed(status, timeout)
    return 0


async def _receive(
    settings: Settings,
    keys: list[str],
    mode: str,
    count: int | None,
    timeout: float | None,
    since: Since | None,
    status: Status,
) -> None:
    """Receive and print until stopped (``--count``, ``--timeout``, a signal)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    try:
        async with asyncio.timeout_at(deadline):  # (the history may wait for the broker)
            replay = await replay_for(settings, since, keys, status=status)
    except TimeoutError:
        return
    reader = ReportReader(settings.max_body)
    out = sys.stdout.buffer
    seen = 0
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        receiver.stop()

    def show(deliveries: list[Delivery]) -> None:
        nonlocal seen
        if stopping:
            return  # in flight when we were told to stop
        reports = reader(deliveries)
        if replay is not None:
            reports = [r for r in reports if replay.keeps(r[0], r[2])]
            if not replay.caught_up and replay.progress(receiver.offset) is None:
                click.echo("listen: caught up with the history; live from here", err=True)
        if count is not None:
            reports = reports[: count - seen]
        if not reports:
            return
        if mode == "quiet":
            lines = [key.encode() for key, _, _ in reports]
        elif mode == "json":
            lines = [encode_json({"routing_key": key, "report": r}) for key, _, r in reports]
        else:  # the body as it came, not re-encoded (fields newer than ours stay visible)
            lines = [b"%s %s" % (key.encode(), body) for key, body, _ in reports]
        try:  # one write and one flush per batch: timely down a pipe, cheap at 20k lines/s
            out.write(b"\n".join(lines) + b"\n")
            out.flush()
        except BrokenPipeError:  # e.g. `| head`: the reader has gone, so have we
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            stop()
            return
        seen += len(reports)
        if count is not None and seen >= count:
            stop()

    receiver = Receiver(
        show,
        settings=settings,
        bindings=[{"exchange": settings.exchange, "routing_keys": keys}],
        no_ack=True,
        what="listen",
        gather=VIEW_GATHER,
        status=status,
    )
    if replay is not None:
        receiver.read_stream(replay.stream, replay.since.offset)
    timer = loop.call_at(deadline, stop) if deadline is not None else None
    try:
        with on_signals(stop):
            await receiver.run()
    finally:
        if timer is not None:
            timer.cancel()
    skipped = {kind: n for kind, n in reader.malformed.counts.items() if n}
    if skipped:
        total = sum(skipped.values())
        kinds = ", ".join(f"{kind}: {n}" for kind, n in skipped.items())
        click.echo(
            f"listen: skipped {total} malformed message{'' if total == 1 else 's'} ({kinds})",
            err=True,
        )
