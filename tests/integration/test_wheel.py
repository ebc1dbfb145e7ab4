"""What a pip user gets: the wheel, installed with its loadtest extra into a fresh virtualenv,
run from a directory that is not the repository.

The load harness and the Grafana files must come from the installed wheel, not from this
checkout: the commands run with a clean environment, outside the repository, with the fresh
virtualenv's interpreter.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import clean_env

REPO = Path(__file__).resolve().parents[2]
# The line the harness prints when the test stops (loadtest.ledger.identity).
IDENTITY = re.compile(
    r"streamer: published (?P<published>[\d,]+) = confirmed (?P<confirmed>[\d,]+) \+ "
    r"coalesced (?P<coalesced>[\d,]+) \+ dropped (?P<dropped>[\d,]+) \(.*?\) \+ pending "
    r"(?P<pending>[\d,]+)  \[(?P<mark>[^\]]+)\]"
)


def _run(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=clean_env({"PYTHONUNBUFFERED": "1"}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{args}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n" + (proc.stderr[-3000:])
    )
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from this checkout and its loadtest extra;
    returns its bin/ directory."""
    root = tmp_path_factory.mktemp("wheel")
    pip = (sys.executable, "-m", "pip")
    _run(*pip, "wheel", "--no-deps", "-q", "-w", root, REPO, cwd=root)
    (wheel,) = root.glob("streamer-*.whl")
    # No pip inside the new environment: this interpreter's pip installs into it (--python),
    # which saves bootstrapping one; the wheel and its dependencies are installed for real.
    _run(sys.executable, "-m", "venv", "--without-pip", root / "venv", cwd=root)
    python = root / "venv" / "bin" / "python"
    _run(*pip, "--python", python, "install", "-q", f"{wheel}[loadtest]", cwd=root)
    return python.parent


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory with no checkout in or above it."""
    assert REPO not in tmp_path.parents
    return tmp_path


def test_the_wheel_brings_its_own_harness_and_files(installed: Path, elsewhere: Path) -> None:
    where = _run(
        installed / "python",
        "-c",
        "import loadtest, streamer; print(loadtest.__file__); print(streamer.__file__)",
        cwd=elsewhere,
    )
    for path in where.stdout.split():
        assert Path(path).is_relative_to(installed.parent), where.stdout


def test_loadtest_runs_the_installed_harness(
    installed: Path, elsewhere: Path, broker_url: str, exchange: str
) -> None:
    args = ["--url", broker_url, "-e", exchange, "--only-summary"]
    args += ["--headless", "-u", "5", "--rate", "1000", "-t", "5s"]
    proc = _run(installed / "streamer", "loadtest", *args, cwd=elsewhere)
    out = proc.stdout + proc.stderr
    match = IDENTITY.search(out)
    assert match, out[-3000:]
    n = {k: int(v.replace(",", "")) for k, v in match.groupdict().items() if k != "mark"}
    assert match["mark"] == "ok", match[0]
    assert n["published"] == n["confirmed"] + n["coalesced"] + n["dropped"], match[0]
    assert n["pending"] == 0 and n["published"] > 2_000, match[0]
    assert "Aggregated" in out and "watcher (classic): received" in out


def test_grafana_export_writes_what_prometheus_and_grafana_take(
    installed: Path, elsewhere: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not installed; `make test` installs it (Debian package prometheus)",
            pytrace=False,
        )
    targets = ["--dashboard", "127.0.0.1:8700", "--metrics", "127.0.0.1:9800"]
    targets += ["--metrics", "[::1]:9801"]
    _run(installed / "streamer", "grafana", "export", "out/", *targets, cwd=elsewhere)
    out = elsewhere / "out"
    checked = _run(promtool, "check", "config", out / "prometheus.yml", cwd=elsewhere)
    assert "SUCCESS" in checked.stdout + checked.stderr
    assert '"127.0.0.1:9800", "[::1]:9801"' in (out / "prometheus.yml").read_text()
    dashboard = json.loads((out / "dashboards" / "streamer.json").read_text())
    assert dashboard["uid"] == "streamer-overview" and dashboard["panels"]
    for provisioning in ("dashboards", "datasources"):
        assert (out / "provisioning" / provisioning / "streamer.yaml").read_text().startswith("#")
