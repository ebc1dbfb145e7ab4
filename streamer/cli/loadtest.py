"""``streamer loadtest``: locust on the installed harness (``loadtest/locustfile.py``), from any
directory.

The command is locust itself: the process is replaced by ``python -m locust -f <locustfile>``
with the arguments it was given, so locust parses them, forks ``--processes``, serves its web
UI, handles signals and sets the exit code exactly as when it is run by hand. Only
streamer's common options are read here, and turned into locust's.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import click

from ..errors import StreamerError
from ._common import common_options, settings_from, usage_error

INSTALL_HINT: Final = "pip install 'streamer[loadtest]'"


def locustfile() -> Path:
    """Where the installed harness's locustfile is; found without importing it (nor locust).

    Raises:
        StreamerError: locust or the harness is not installed.
    """
    if importlib.util.find_spec("locust") is None:
        raise StreamerError(
            f"streamer loadtest needs locust, which is not installed: {INSTALL_HINT}"
        )
    spec = importlib.util.find_spec("loadtest")
    if spec is None or spec.origin is None:
        raise StreamerError(f"the load harness (loadtest) is not installed: {INSTALL_HINT}")
    return Path(spec.origin).with_name("locustfile.py")


def _gives_host(args: Sequence[str]) -> bool:
    """Whether locust's own -H/--host is among ``args`` (then it names the broker)."""
    return any(arg == "--host" or arg.startswith(("--host=", "-H")) for arg in args)


def locust_argv(
    args: Sequence[str],
    *,
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    locust_config: str | None = None,
    locust_help: bool = False,
) -> list[str]:
    """The arguments for locust after ``-f <locustfile>``: streamer's options mapped to
    locust's and the harness's, then ``args`` as they were given.

    The broker is ``--url``, else ``$STREAMER_URL``, else the ``--config`` file's url, else the
    local one (its first URL: the harness takes one); it becomes locust's ``--host``, which
    the master also hands to its workers. Locust's own ``-H/--host`` wins (with ``--url`` too,
    it is a usage error).
    """
    broker = settings_from(url, None, config).urls[0]  # a bad --url or file stops here
    argv: list[str] = []
    if not _gives_host(args):
        argv += ["--host", broker]
    elif url is not None:
        usage_error("give the broker as --url or as locust's --host, not both")
    if exchange is not None:
        argv += ["--exchange", exchange]
    if verbose:
        argv += ["--loglevel", "DEBUG"]
    if locust_config is not None:
        argv += ["--config", locust_config]
    if locust_help:
        argv.append("--help")
    return argv + list(args)


class _DefaultsShown(argparse.HelpFormatter):
    """argparse's help with each option's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, "", []) or action.help is None:
            return action.help
        return f"{action.help} (default: {action.default})"


class _Command(click.Command):
    """A command whose help ends with the harness's options, as locust's parser has them."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from loadtest.options import TITLE, add_options  # the standard library only

        parser = argparse.ArgumentParser(
            add_help=False,
            usage=argparse.SUPPRESS,
            formatter_class=_DefaultsShown,
        )
        add_options(parser)
        text = parser.format_help().replace(f"{TITLE}:", "Harness options (passed through):", 1)
        formatter.write("\n" + text.rstrip("\n") + "\n")


@click.command(
    cls=_Command,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@common_options
@click.option(
    "--locust-config",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Locust's own configuration file (locust's --config).",
)
@click.option(
    "--locust-help", is_flag=True, help="Locust's own help: its options (the harness's are below)."
)
@click.argument("locust_args", nargs=-1, type=click.UNPROCESSED, metavar="[LOCUST OPTIONS]...")
def loadtest(
    url: str | None,
    exchange: str | None,
    config: str | None,
    verbose: int,
    locust_config: str | None,
    locust_help: bool,
    locust_args: tuple[str, ...],
) -> None:
    """Capacity-test a broker: locust users that are task workers publishing through streamer.

    Runs `locust -f <the installed loadtest/locustfile.py> OPTIONS` from any directory. Every
    locust option passes through (-u, -t, --headless, --csv, --processes, --master, --worker,
    --web-host, ...), and so do the harness's own, listed below: a fixed --rate, --rates steps
    or the --capacity search. Streamer's options map to locust's: --url to --host (default:
    $STREAMER_URL, else the --config file's url, else the local broker), -e/--exchange to the
    harness's --exchange (default streamer.loadtest, apart from real consumers), --config to
    the publishers' settings, -v to --loglevel DEBUG. The exit code is locust's; 1 also when
    the harness's accounting check fails. Needs locust: pip install 'streamer[loadtest]'.
    docs/capacity-testing.md tells how to read the results.

    \b
    Examples:
      streamer loadtest --headless -u 50 --rate 20000 -t 30s --csv out/run
      streamer loadtest --headless -u 50 --rates 5000:20,20000:20 --csv out/steps
      streamer loadtest --headless -u 50 --capacity --start-rate 15000 --csv out/capacity
      streamer loadtest --web-host 127.0.0.1 -u 50 --rate 10000      # web UI on :8089
      streamer loadtest --master --expect-workers 4 --headless -u 200 --capacity
      streamer loadtest --worker --master-host MASTER                 # on each load machine
    """
    path = locustfile()
    argv = locust_argv(
        locust_args,
        url=url,
        exchange=exchange,
        config=config,
        verbose=verbose,
        locust_config=locust_config,
        locust_help=locust_help,
    )
    env = dict(os.environ)
    if config is not None:
        env["STREAMER_CONFIG"] = config  # the publishers' settings: BackgroundPublisher reads it
    sys.stdout.flush()
    sys.stderr.flush()
    command = [sys.executable, "-m", "locust", "-f", str(path), *argv]
    os.execve(sys.executable, command, env)


# The common -e/--exchange says the settings' default; here it is the harness's.
for _param in loadtest.params:
    if _param.name == "exchange" and isinstance(_param, click.Option):
        _param.help = "The harness's --exchange (default: streamer.loadtest)."
