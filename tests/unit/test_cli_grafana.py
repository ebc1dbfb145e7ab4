"""``streamer grafana export`` in process: the repository's grafana/ files come out as they
are, prometheus.yml's targets follow the options, and nothing is overwritten unasked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from streamer.cli import main
from streamer.cli.grafana import with_targets

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
SHIPPED = sorted(str(p.relative_to(GRAFANA)) for p in GRAFANA.rglob("*") if p.is_file())


def export(*args: str) -> Result:
    return CliRunner().invoke(main, ["grafana", "export", *args])


def targets(config: str) -> dict[str, list[str]]:
    """job name -> its static targets, read from the exported prometheus.yml."""
    found = re.findall(r"job_name: (\S+)\n(?:.*\n)*?\s+- targets: (\[.*\])", config)
    return {job: json.loads(listed) for job, listed in found}


def test_writes_every_shipped_file_as_it_is(tmp_path: Path) -> None:
    result = export(str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in tmp_path.rglob("*.*"))
    assert written == SHIPPED
    assert "dashboards/streamer.json" in written and "prometheus.yml" in written
    for name in SHIPPED:  # no options: prometheus.yml too is the repository's
        assert (tmp_path / "out" / name).read_bytes() == (GRAFANA / name).read_bytes(), name
    assert result.stdout == f"wrote {', '.join(SHIPPED)} to {tmp_path / 'out'}\n"


def test_default_targets_are_the_repositorys() -> None:
    assert targets((GRAFANA / "prometheus.yml").read_text()) == {
        "streamer-dashboard": ["127.0.0.1:8700"],
        "streamer-publishers": ["127.0.0.1:9800"],
    }


def test_targets_follow_the_options(tmp_path: Path) -> None:
    args = ["--dashboard", "10.0.0.5:8700", "--metrics", "[::1]:9800"]
    args += ["--metrics", "worker-2.example:9801", "--dashboard", "localhost:18700"]
    assert export(str(tmp_path), *args).exit_code == 0
    config = (tmp_path / "prometheus.yml").read_text()
    assert targets(config) == {
        "streamer-dashboard": ["10.0.0.5:8700", "localhost:18700"],
        "streamer-publishers": ["[::1]:9800", "worker-2.example:9801"],
    }
    shipped = (GRAFANA / "prometheus.yml").read_text()
    assert config.splitlines()[:3] == shipped.splitlines()[:3]  # the comments stay


def test_only_the_given_job_changes(tmp_path: Path) -> None:
    assert export(str(tmp_path), "--metrics", "127.0.0.1:9300").exit_code == 0
    assert targets((tmp_path / "prometheus.yml").read_text()) == {
        "streamer-dashboard": ["127.0.0.1:8700"],
        "streamer-publishers": ["127.0.0.1:9300"],
    }


def one_line(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    assert export(str(tmp_path)).exit_code == 0
    mine = tmp_path / "prometheus.yml"
    mine.write_text("# mine\n")
    (tmp_path / "dashboards" / "streamer.json").unlink()
    line = one_line(export(str(tmp_path), "--metrics", "a:1"))
    assert line == (
        f"streamer: usage error: {mine} and 2 more exist; --force overwrites "
        "(see 'streamer grafana export --help')"
    )
    assert mine.read_text() == "# mine\n"
    assert not (tmp_path / "dashboards" / "streamer.json").exists()  # nothing written at all
    assert export(str(tmp_path), "--metrics", "a:1", "--force").exit_code == 0
    assert targets(mine.read_text())["streamer-publishers"] == ["a:1"]
    assert (tmp_path / "dashboards" / "streamer.json").exists()


def test_one_existing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "prometheus.yml").write_text("# mine\n")
    line = one_line(export(str(tmp_path)))
    assert f"{tmp_path / 'prometheus.yml'} exists; --force overwrites" in line


def test_a_file_in_the_way_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("")
    assert "is a file" in one_line(export(str(tmp_path / "out")))


@pytest.mark.parametrize(
    "address", ["foo", "foo:", ":8700", "foo:0", "foo:65536", "foo:x", "a b:1", "::1:80", "h/p:1"]
)
def test_bad_address_is_a_one_line_usage_error(tmp_path: Path, address: str) -> None:
    line = one_line(export(str(tmp_path), "--metrics", address))
    assert f"'{address}' is not HOST:PORT" in line
    assert list(tmp_path.iterdir()) == []


def test_a_job_missing_from_the_config_is_an_error() -> None:
    with pytest.raises(ValueError, match="no job 'nope'"):
        with_targets((GRAFANA / "prometheus.yml").read_text(), "nope", ["a:1"])


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(main, ["grafana", "--help"])
    assert result.exit_code == 0 and "streamer grafana export" in result.stdout
    assert "grafana" in CliRunner().invoke(main, []).output
