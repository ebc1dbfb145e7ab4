"""The command line's conventions, in process (no broker): every usage or configuration error
is one line on stderr with exit code 2, click's own errors included; help works everywhere."""

from __future__ import annotations

import importlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from streamer.amqp import Status
from streamer.cli import main
from streamer.cli._common import (
    EXIT_CREDENTIALS,
    EXIT_FAILURE,
    EXIT_NEVER_CONNECTED,
    EXIT_UNTRUSTED,
    EXIT_USAGE,
    NeverConnected,
)
from streamer.errors import AuthenticationError, BrokerError, UntrustedCertificate

COMMANDS = ("consume", "dashboard", "demo", "listen", "loadtest", "simulate", "watch")
# loadtest hands options it does not know to locust (tests/unit/test_cli_loadtest.py).
STRICT = tuple(command for command in COMMANDS if command != "loadtest")
# A port nothing listens on: no test here may reach a broker.
NOWHERE = "amqp://guest:guest@127.0.0.1:1/"


def invoke(*args: str) -> Result:
    return CliRunner(env={"STREAMER_URL": NOWHERE, "STREAMER_CONFIG": None}).invoke(main, args)


def one_line(result: Result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unknown_command_suggests_the_near_one() -> None:
    line = one_line(invoke("lisen"))
    assert line == (
        "streamer: usage error: no such command 'lisen'; did you mean 'listen'? "
        "(see 'streamer --help')"
    )
    assert "did you mean" not in one_line(invoke("zzzzzz"))


@pytest.mark.parametrize("command", STRICT)
def test_unknown_option_is_one_line(command: str) -> None:
    line = one_line(invoke(command, "--no-such-option"))
    assert line.startswith("streamer: usage error: No such option '--no-such-option'")
    assert line.endswith(f"(see 'streamer {command} --help')")


@pytest.mark.parametrize("command", ["demo", "listen", "simulate", "watch"])
def test_bad_url_is_a_configuration_error(command: str) -> None:
    line = one_line(invoke(command, "--url", "http://user:secret@example.invalid/"))
    assert line.startswith("streamer: configuration error: setting url=")
    assert "secret" not in line and "***" in line


def test_bad_config_file_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("heartbeat = 'often'\n")
    line = one_line(invoke("listen", "--config", str(config)))
    assert line.startswith("streamer: configuration error: setting heartbeat='often'")
    assert str(config) in line


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["simulate", "--error-rate", "2"], "--error-rate"),
        (["simulate", "--error-rate", "0.6", "--cancel-rate", "0.6"], "--cancel-rate"),
        (["simulate", "--updates", "9"], "--updates"),
        (["simulate", "--concurrency", "0"], "--concurrency"),
        (["listen", "--task", "a.b"], "--task: task_id 'a.b' contains '.'"),
        (["watch", "--task", "a b"], "--task: task_id 'a b' contains ' '"),
        (["dashboard", "--host", "0.0.0.0"], "is not a loopback address"),
        (["dashboard", "--basic-auth", "nocolon"], "user:password"),
        (["consume"], "Missing option '--callback'"),
    ],
)
def test_bad_option_is_a_one_line_usage_error(args: list[str], complaint: str) -> None:
    line = one_line(invoke(*args))
    assert line.startswith("streamer: usage error:") and complaint in line, line


def test_bad_callback_is_a_configuration_error() -> None:
    line = one_line(invoke("consume", "--callback", "no_such_module_q:cb"))
    assert "cannot import callback module" in line


def test_verbose_shows_the_traceback_instead() -> None:
    result = invoke("listen", "-v", "--url", "http://nowhere/")
    assert result.exit_code == 1 and result.exception is not None
    assert type(result.exception).__name__ == "ConfigError"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    for option in ("--url", "--exchange", "--config", "--verbose"):
        assert option in result.stdout
    assert "Example" in result.stdout


def test_no_command_shows_the_help() -> None:
    result = invoke()
    assert "Usage: streamer [OPTIONS] COMMAND" in result.output
    for command in COMMANDS:
        assert command in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and "0.1.0" in result.stdout


# -- exit codes: the same for every command (README: exit codes) ----------------------------

# The arguments each command needs to get as far as talking to a broker.
TALKING = {
    "consume": ("consume", "--callback", "json:dumps"),
    "dashboard": ("dashboard",),
    "demo": ("demo",),
    "history": ("history", "status"),
    "listen": ("listen",),
    "simulate": ("simulate",),
    "watch": ("watch",),
}


def _failing(monkeypatch: pytest.MonkeyPatch, command: str, error: BaseException) -> None:
    """Make ``command``'s coroutine raise ``error``, as talking to a broker would."""

    def run(verbose: int, main: Coroutine[Any, Any, int]) -> int:
        main.close()
        raise error

    # (the package's attribute of that name is the command, not its module)
    monkeypatch.setattr(importlib.import_module(f"streamer.cli.{command}"), "run", run)


@pytest.mark.parametrize("command", sorted(TALKING))
@pytest.mark.parametrize(
    ("error", "code"),
    [
        (AuthenticationError("broker at amqp://guest:***@h/ refused the credentials: no", 403), 4),
        (UntrustedCertificate("amqps://h/", "self-signed certificate"), 5),
        (NeverConnected(Status("x"), 3.0), 3),
        (BrokerError("broker refused the listen's set-up: 406 PRECONDITION_FAILED", 406), 1),
    ],
    ids=["credentials", "certificate", "never-connected", "other"],
)
def test_broker_trouble_exits_with_the_same_code_everywhere(
    monkeypatch: pytest.MonkeyPatch, command: str, error: BaseException, code: int
) -> None:
    _failing(monkeypatch, command, error)
    line = one_line(invoke(*TALKING[command]), code)
    assert line == f"streamer: error: {error}"


def test_exit_codes_are_the_documented_ones() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("### Exit codes") :]
    for code, meaning in (
        (EXIT_FAILURE, "failure"),
        (EXIT_USAGE, "usage"),
        (EXIT_NEVER_CONNECTED, "never connected"),
        (EXIT_CREDENTIALS, "credentials"),
        (EXIT_UNTRUSTED, "certificate"),
    ):
        row = next(line for line in table.splitlines() if line.startswith(f"| {code} "))
        assert meaning in row.lower(), row
    assert (EXIT_NEVER_CONNECTED, EXIT_CREDENTIALS, EXIT_UNTRUSTED) == (3, 4, 5)
