"""``streamer loadtest`` in process: what it would run locust with (the exec is caught, so
nothing starts), how streamer's options map to locust's, and its one-line errors."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import loadtest
from streamer.cli import main

URL = "amqp://guest:guest@127.0.0.1:1/"
LOCUSTFILE = str(Path(loadtest.__file__).with_name("locustfile.py"))


class Exec:
    """Stands in for ``os.execve``: records what would have replaced the process."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []

    def __call__(self, path: str, argv: list[str], env: dict[str, str]) -> None:
        self.calls.append((path, list(argv), dict(env)))

    @property
    def argv(self) -> list[str]:
        assert len(self.calls) == 1, self.calls
        return self.calls[0][1]

    @property
    def env(self) -> dict[str, str]:
        return self.calls[0][2]


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Exec]:
    fake = Exec()
    monkeypatch.setattr(os, "execve", fake)
    yield fake


def invoke(*args: str, **env: str | None) -> Result:
    runner = CliRunner(env={"STREAMER_URL": URL, "STREAMER_CONFIG": None, **env})
    return runner.invoke(main, ["loadtest", *args])


def locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *args]


def test_locust_options_pass_through_in_order(execs: Exec) -> None:
    args = ["--headless", "-u", "5", "--rate", "1000", "-t", "5s", "--csv", "out/run"]
    args += ["--master", "--expect-workers", "2", "--rates=5000:20,20000:20", "--no-watch"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert execs.calls[0][0] == sys.executable
    assert execs.argv == locust("--host", URL, *args)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (["-e", "streamer.test.x"], ["--exchange", "streamer.test.x"]),
        (["--exchange", "streamer.test.x"], ["--exchange", "streamer.test.x"]),
        (["-v"], ["--loglevel", "DEBUG"]),
        (["--locust-config", "my.conf"], ["--config", "my.conf"]),
        (["--locust-help"], ["--help"]),
    ],
)
def test_streamer_options_map_to_locusts(execs: Exec, ours: list[str], theirs: list[str]) -> None:
    result = invoke(*ours, "--headless", "--capacity")
    assert result.exit_code == 0, result.output
    assert execs.argv == locust("--host", URL, *theirs, "--headless", "--capacity")


def test_url_is_the_host(execs: Exec) -> None:
    other = "amqp://user:secret@127.0.0.1:5673/vh"
    assert invoke("--url", other, "--worker").exit_code == 0
    assert execs.argv == locust("--host", other, "--worker")


def test_config_file_gives_the_url_and_the_publishers_settings(execs: Exec, tmp_path: Path) -> None:
    config = tmp_path / "streamer.toml"
    config.write_text('url = ["amqp://a:b@127.0.0.1:5674/", "amqp://a:b@127.0.0.1:5675/"]\n')
    result = invoke("--config", str(config), "--headless", STREAMER_URL=None)
    assert result.exit_code == 0, result.output
    assert execs.argv == locust("--host", "amqp://a:b@127.0.0.1:5674/", "--headless")
    assert execs.env["STREAMER_CONFIG"] == str(config)


@pytest.mark.parametrize("host", [["-H", "amqp://h/"], ["--host", "amqp://h/"], ["--host=x"]])
def test_locusts_own_host_wins(execs: Exec, host: list[str]) -> None:
    assert invoke(*host, "--headless").exit_code == 0
    assert execs.argv == locust(*host, "--headless")


def one_line(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_url_and_host_together_is_a_usage_error(execs: Exec) -> None:
    line = one_line(invoke("--url", URL, "-H", URL), 2)
    assert line.startswith("streamer: usage error: give the broker as --url or as locust's")
    assert execs.calls == []


def test_bad_url_is_a_configuration_error_and_masked(execs: Exec) -> None:
    line = one_line(invoke("--url", "http://user:secret@example.invalid/"), 2)
    assert line.startswith("streamer: configuration error: setting url=")
    assert "secret" not in line
    assert execs.calls == []


def test_without_locust_it_says_what_to_install(
    execs: Exec, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "locust" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    line = one_line(invoke("--headless"), 1)
    assert line == (
        "streamer: error: streamer loadtest needs locust, which is not installed: "
        "pip install 'streamer[loadtest]'"
    )
    assert execs.calls == []


def test_help_maps_to_locust_and_lists_the_harness_options(execs: Exec) -> None:
    result = invoke("--help")
    assert result.exit_code == 0 and execs.calls == []
    text = result.stdout
    assert "locust -f <the installed loadtest/locustfile.py>" in text
    assert "--url to --host" in text and "--locust-help" in text
    harness = text.split("Harness options (passed through):", 1)[1]
    for option in ("--rate RATE", "--rates", "--capacity", "--max-p99", "--publisher-option"):
        assert option in harness
    assert "(default: 5000.0)" in harness and "(default: False)" not in harness
