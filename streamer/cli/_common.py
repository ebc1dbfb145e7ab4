"""What every ``streamer`` command shares: the common options, settings, running a coroutine
under uvloop, stopping on signals, and the one error path.

Errors are one line on stderr and an exit code (DESIGN: command line), the same for every
command: 2 for usage and configuration errors (click's own usage errors too, such as an
unknown command), 3 when no broker was ever connected within the time given (``--timeout``),
4 when the broker refused the credentials, 5 when its TLS certificate is not trusted, 1 for
anything else, 130 on Ctrl-C; a traceback only with ``-v``. Commands use the codes from 10 up
for their own outcomes (``watch --task``). They all leave through :meth:`Group.main`, so no
command handles errors of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, Final, NoReturn, TypeVar

import click

from ..amqp import Status
from ..errors import (
    AuthenticationError,
    ConfigError,
    InvalidReport,
    StreamerError,
    UntrustedCertificate,
)
from ..routing import routing_key
from ..settings import Settings, load_settings
from ..topology import CONSUMER_TABLES

__all__ = [
    "EXIT_CREDENTIALS",
    "EXIT_FAILURE",
    "EXIT_NEVER_CONNECTED",
    "EXIT_UNTRUSTED",
    "EXIT_USAGE",
    "Group",
    "NeverConnected",
    "common_options",
    "deadline_passed",
    "face",
    "on_signals",
    "reach",
    "run",
    "settings_from",
    "since_option",
    "task_key",
    "usage_error",
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILURE: Final = 1  # anything else: the line says what
EXIT_USAGE: Final = 2  # usage or configuration error
EXIT_NEVER_CONNECTED: Final = 3  # --timeout passed and no broker ever answered
EXIT_CREDENTIALS: Final = 4  # the broker refused the credentials
EXIT_UNTRUSTED: Final = 5  # the broker's TLS certificate did not verify


class NeverConnected(StreamerError):
    """The command's time ran out before any broker answered (exit 3): start the broker,
    or check the URL and the network between."""

    def __init__(self, status: Status, seconds: float) -> None:
        why = status.reason()
        super().__init__(
            f"never connected to {status.url or 'the broker'} in {seconds:g} s"
            + (f" ({status.attempts} attempts; last: {why})" if why else "")
        )


# -v of the command being run, for the error path (it decides whether to show a traceback).
# One command runs per process, and Group.main resets it for in-process runs (tests).
_verbosity = [0]


def _remember_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> int:
    _verbosity[0] = value
    return value


def common_options(func: F) -> F:
    """--url, -e/--exchange, --config, -v: the options every subcommand takes."""
    func = click.option(
        "-v",
        "--verbose",
        count=True,
        callback=_remember_verbosity,
        help="More logging (-vv: debug); tracebacks on errors.",
    )(func)
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


def since_option(help_text: str) -> Callable[[F], F]:
    """--since: where a view starts reading the exchange's history."""
    return click.option(
        "--since",
        metavar="WHEN",
        callback=_parse_since,
        help=help_text,
    )


def _parse_since(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from ..history import parse_since

    if value is None or value.strip().lower() == "now":
        return value and "now"
    try:
        return parse_since(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("--since "), ctx, param) from None


def settings_from(
    url: str | None, exchange: str | None, config: str | None, *, consumer: bool = False
) -> Settings:
    """Settings from the common options; with ``consumer``, the file may also hold the
    consumer's ``[[bindings]]``, ``[queues.*]`` and ``[qos]`` tables (read elsewhere)."""
    sections = CONSUMER_TABLES if consumer else ()
    return load_settings(config, url=url, exchange=exchange, sections=sections)


def usage_error(message: str) -> NoReturn:
    """Stop with a usage error (exit 2) about the current command."""
    raise click.UsageError(message, click.get_current_context(silent=True))


def task_key(option: str, task_id: str, settings: Settings) -> str:
    """The routing key of ``--task`` ``task_id``; a usage error if it cannot be one."""
    try:
        return routing_key(task_id, settings.routing_prefix)
    except InvalidReport as exc:
        usage_error(f"{option}: {exc}")


def run(verbose: int, main: Coroutine[Any, Any, int]) -> int:
    """Configure logging from ``-v`` and run a command's coroutine under uvloop.

    Errors propagate to :meth:`Group.main`, which turns them into one line.
    """
    import uvloop  # the commands' event loop; the library itself is loop-agnostic

    # What is loaded by now lives as long as the process: keep it out of every collection,
    # and collect the young generation less often. A receiving command allocates a few
    # objects per report (tens of thousands a second); this saved about a tenth of its CPU.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return uvloop.run(main)


def face(status: Status) -> contextlib.AbstractAsyncContextManager[object]:
    """The connection's status line on stderr while not connected, when stderr is a
    terminal; nothing otherwise (in a log, the reconnect loop's one line per change of
    state says it). rich is imported only then: it costs start-up time."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    from rich.console import Console

    from ..statusline import StatusLine

    return StatusLine(status, Console(stderr=True))


async def reach(settings: Settings, what: str, within: float) -> None:
    """Wait until a broker accepts us, at most ``within`` seconds, with the status line on a
    terminal meanwhile; for the commands that publish only, whose publisher never raises:
    refused credentials or an untrusted certificate must stop them at once, as they stop
    every other command.

    Raises:
        AuthenticationError, UntrustedCertificate: at once.
        NeverConnected: no broker answered within ``within`` seconds.
    """
    from ..amqp import ConnectionCallbacks, Link

    async def nothing(conn: object) -> None:
        return None

    status = Status(what)
    link = Link(
        settings,
        name=f"{settings.client_name} {what}",
        callbacks=ConnectionCallbacks(),
        setup=nothing,
        what=what,
        fatal=True,
        status=status,
    )
    keeping = asyncio.ensure_future(link.run())
    connected = asyncio.ensure_future(link.connected.wait())
    try:
        async with face(status):
            await asyncio.wait(
                {keeping, connected}, timeout=within, return_when=asyncio.FIRST_COMPLETED
            )
    finally:
        connected.cancel()
        await link.close(settings.close_timeout)
        if not keeping.done():
            keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping  # raises what made it give up (credentials, certificate)
    if not status.ever_connected:
        raise NeverConnected(status, within)


def deadline_passed(status: Status, seconds: float | None) -> None:
    """At the end of a ``--timeout``: raise :class:`NeverConnected` (exit 3) if no broker
    ever answered."""
    if seconds is not None and not status.ever_connected:
        raise NeverConnected(status, seconds)


@contextlib.contextmanager
def on_signals(
    callback: Callable[[], None], signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[None]:
    """Call ``callback`` on the running loop when one of ``signals`` arrives (a clean stop)."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"streamer: {message}", err=True)
    sys.exit(code)


class Group(click.Group):
    """The ``streamer`` group: the one place errors become a line and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        run_main = super().main
        if not standalone_mode:
            return run_main(args, prog_name, complete_var, False, **extra)
        _verbosity[0] = 0
        try:
            code = run_main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `streamer` alone: the help, as click shows it
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            ctx = exc.ctx
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _fail(f"usage error: {exc.format_message()}{hint}", 2)
        except click.Abort:
            click.echo(file=sys.stderr)
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except UntrustedCertificate as exc:
            if _verbosity[0]:
                raise
            _fail(f"error: {exc}", EXIT_UNTRUSTED)
        except AuthenticationError as exc:
            if _verbosity[0]:
                raise
            _fail(f"error: {exc}", EXIT_CREDENTIALS)
        except NeverConnected as exc:
            if _verbosity[0]:
                raise
            _fail(f"error: {exc}", EXIT_NEVER_CONNECTED)
        except ConfigError as exc:
            if _verbosity[0]:
                raise
            _fail(f"configuration error: {exc}", EXIT_USAGE)
        except (StreamerError, OSError) as exc:
            if _verbosity[0]:
                raise
            _fail(f"error: {exc}", EXIT_FAILURE)
        sys.exit(code if isinstance(code, int) else 0)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """As click's, with a suggestion when the name is a near miss (``lisen``)."""
        name = args[0] if args else ""
        if args and self.get_command(ctx, name) is None and not name.startswith("-"):
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"no such command {name!r}{hint}")
        return super().resolve_command(ctx, args)
