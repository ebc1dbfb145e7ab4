"""The ``streamer`` command: one module per subcommand; options, signals and the one error
path they share live in ``_common``.

Heavy dependencies (rich for ``watch`` and ``simulate``'s bar, aiohttp for ``dashboard``) are
imported inside the commands that need them, so every command starts quickly.
"""

from __future__ import annotations

import click

from ._common import Group
from .consume import consume
from .dashboard import dashboard
from .demo import demo
from .grafana import grafana
from .history import history
from .listen import listen
from .loadtest import loadtest
from .simulate import simulate
from .watch import watch

__all__ = ["main"]


@click.group("streamer", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="streamer")
def main() -> None:
    """Stream task status reports to RabbitMQ and watch them arrive.

    \b
    Example:
      streamer demo --url amqp://guest:guest@127.0.0.1:5672/
    """


for _command in (consume, dashboard, demo, grafana, history, listen, loadtest, simulate, watch):
    main.add_command(_command)
