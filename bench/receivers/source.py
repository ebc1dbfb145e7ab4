"""Which streamer code a run of bench/receive.py measures.

A full run takes half an hour, and this repository gets commits meanwhile (the receivers are
being tuned as they are measured). A table whose rounds ran different code would average two
programs. So by default the parent copies ``streamer/`` and ``loadtest/`` as they are when the
run starts into a temporary directory and every child (the publisher, the bench's receivers,
the ``streamer`` commands) imports from that copy: ``PYTHONPATH`` comes before the editable
install's ``.pth`` entry, and bench/receive.py puts ``$BENCH_RECEIVE_SOURCE`` on its path
instead of the repository. Each run also records a digest of the code it imported, so a mix
is flagged even with ``--no-snapshot``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

ENV = "BENCH_RECEIVE_SOURCE"
PACKAGES = ("streamer", "loadtest")


def take(repo: Path) -> Path:
    """Copy the packages (sources only) and point every child at the copy (via the env)."""
    dest = Path(tempfile.mkdtemp(prefix="receive-src-"))
    for name in PACKAGES:
        shutil.copytree(
            repo / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    os.environ[ENV] = str(dest)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(dest), os.environ.get("PYTHONPATH", "")) if p
    )
    return dest


def drop(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)


def origin(repo: Path) -> dict[str, Any]:
    """The repository's commit, and whether the packages differ from it (read-only git)."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
        )

    try:
        commit = git("rev-parse", "--short", "HEAD").stdout.strip() or None
        dirty = git("diff", "--quiet", "HEAD", "--", *PACKAGES).returncode == 1
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = None, None
    return {"commit": commit, "uncommitted_changes": dirty}


def digest(root: Path) -> str:
    """A short hash of the receiving code under ``root`` as it is on disk right now."""
    h = hashlib.sha256()
    for path in sorted(p for name in PACKAGES for p in (root / name).rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]
