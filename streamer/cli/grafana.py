"""``streamer grafana export``: the Grafana dashboard, its provisioning files and a Prometheus
scrape config, written where the user wants them.

The repository's ``grafana/`` is the one source of these files: the wheel carries it as
``streamer/grafana`` (hatch's force-include), a checkout reads it where it is. Only the
scrape targets of ``prometheus.yml`` change on the way out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Final

import click

from ._common import usage_error

PROMETHEUS: Final = PurePosixPath("prometheus.yml")
# The scrape jobs of the shipped prometheus.yml that the options fill in.
DASHBOARD_JOB: Final = "streamer-dashboard"
PUBLISHERS_JOB: Final = "streamer-publishers"


def shipped() -> Traversable:
    """The shipped files: ``streamer/grafana`` in an installed wheel, else (a checkout, or an
    editable install of one) the repository's own ``grafana/``."""
    installed = resources.files("streamer").joinpath("grafana")
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "grafana"


def _walk(folder: Traversable, under: PurePosixPath) -> Iterator[tuple[PurePosixPath, bytes]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(entry, under / entry.name)
        elif not entry.name.startswith("."):
            yield under / entry.name, entry.read_bytes()


def with_targets(config: str, job: str, targets: Sequence[str]) -> str:
    """``config`` (the shipped prometheus.yml) with ``job``'s static targets replaced.

    The file is edited, not re-serialised, so that its comments stay; the list is written as
    JSON, which is YAML's flow sequence syntax.

    Raises:
        ValueError: ``config`` has no such job with a one-line ``targets: [...]`` list.
    """
    pattern = re.compile(
        rf"(job_name:[ \t]*{re.escape(job)}[ \t]*\n"  # the job
        r"(?:(?![ \t]*- job_name:)[ \t]+[^\n]*\n)*?"  # its lines up to its targets
        r"[ \t]+- targets:[ \t]*)\[[^\]\n]*\]"
    )
    edited, found = pattern.subn(lambda m: m.group(1) + json.dumps(list(targets)), config, 1)
    if not found:
        raise ValueError(f"prometheus.yml has no job {job!r} with a one-line targets list")
    return edited


def files(dashboards: Sequence[str] = (), publishers: Sequence[str] = ()) -> dict[str, bytes]:
    """Every file to write, by path relative to the export directory: the shipped ones, with
    the Prometheus targets replaced where addresses are given (else the shipped ones stay)."""
    out = {str(path): data for path, data in _walk(shipped(), PurePosixPath())}
    config = out[str(PROMETHEUS)].decode()
    if dashboards:
        config = with_targets(config, DASHBOARD_JOB, dashboards)
    if publishers:
        config = with_targets(config, PUBLISHERS_JOB, publishers)
    out[str(PROMETHEUS)] = config.encode()
    return out


def _addresses(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    """Check each ``HOST:PORT`` as Prometheus takes a target (an IPv6 host in brackets)."""
    for value in values:
        host, colon, port = value.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        name = host[1:-1] if bracketed else host
        bad = not colon or not name or not port.isdigit() or not 0 < int(port) < 65536
        if bad or re.search(r"[\s/\"'\[\],]", name) or (":" in name and not bracketed):
            raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8700)")
    return list(values)


@click.group()
def grafana() -> None:
    """The Grafana dashboard and the Prometheus config for streamer's metrics.

    \b
    Example:
      streamer grafana export monitoring/ --dashboard 127.0.0.1:8700 --metrics 10.0.0.5:9800
    """


@grafana.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--dashboard",
    "dashboards",
    multiple=True,
    metavar="HOST:PORT",
    callback=_addresses,
    help="A `streamer dashboard` to scrape (the tasks' metrics); repeatable "
    "(default: 127.0.0.1:8700).",
)
@click.option(
    "--metrics",
    "publishers",
    multiple=True,
    metavar="HOST:PORT",
    callback=_addresses,
    help="A publisher's metrics endpoint (metrics_port) to scrape; repeatable "
    "(default: 127.0.0.1:9800).",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def export(directory: Path, dashboards: list[str], publishers: list[str], force: bool) -> None:
    """Write the dashboard JSON, Grafana's provisioning files and prometheus.yml to DIRECTORY.

    DIRECTORY gets dashboards/streamer.json (uid streamer-overview), provisioning/dashboards/
    and provisioning/datasources/ (copy them to Grafana's provisioning folder) and a
    prometheus.yml that scrapes the --dashboard and --metrics addresses. Nothing is written
    if a file exists, unless --force.

    \b
    Example:
      streamer grafana export monitoring/ --metrics 127.0.0.1:9800 --metrics 127.0.0.1:9801
      prometheus --config.file=monitoring/prometheus.yml
    """
    contents = files(dashboards, publishers)
    targets = {directory / name: data for name, data in contents.items()}
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        usage_error(f"{existing[0]}{more} exist{'s' if not more else ''}; --force overwrites")
    for path, data in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    click.echo(f"wrote {', '.join(sorted(contents))} to {directory}")
