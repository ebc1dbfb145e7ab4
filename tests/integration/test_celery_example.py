"""examples/celery_progress end to end: a real prefork Celery worker streaming progress.

The worker imports the example's ``tasks`` module, which creates ONE BackgroundPublisher,
and then forks its pool children: every report must come from a child with its own
connection (the fork-safety claim). Celery is only ever imported in subprocesses (the worker
and ``send.py``), so its import-time warnings cannot trip ``filterwarnings = error`` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Collector

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "celery_progress"
ITEMS = 400
METADATA = ITEMS // 10  # as in tasks.sync_repository
REPOS = [f"repo-{n}" for n in range(1, 9)]
TERMINAL = {"finished", "error", "canceled", "skipped"}


def example_env(broker_url: str, exchange: str, app_dir: Path) -> dict[str, str]:
    """The environment for the worker and send.py: ours, minus any other STREAMER_* setting
    (e.g. a STREAMER_CONFIG of the developer's), plus the broker and exchange under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMER_", "CELERY_"))}
    env.update(
        CELERY_BROKER_URL=broker_url,
        STREAMER_URL=broker_url,
        STREAMER_EXCHANGE=exchange,
        PYTHONPATH=os.pathsep.join(filter(None, [str(app_dir), env.get("PYTHONPATH")])),
    )
    return env


def worker_app(directory: Path, control_exchange: str) -> str:
    """A module running the example's app unchanged but for its control exchange name."""
    (directory / "celery_example_app.py").write_text(
        f"from tasks import app\napp.conf.control_exchange = {control_exchange!r}\n"
    )
    return "celery_example_app"


def tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no worker log>"


@contextlib.contextmanager
def celery_worker(
    app: str, queue: str, name: str, env: dict[str, str], log: Path, cwd: Path = EXAMPLE
) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A <app> worker`` (prefork, 4 children) on ``queue``, run in ``cwd``, ready
    when yielded; always stopped on exit: SIGTERM (warm shutdown), then SIGKILL to its
    process group."""
    cmd = [
        sys.executable, "-m", "celery", "-A", app, "worker",
        "--pool=prefork", "--concurrency=4",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-Q", queue, "-n", f"{name}@%h", "--loglevel=INFO",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while " ready." not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                pytest.fail(f"celery worker exited with {proc.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"celery worker not ready after 30 s:\n{tail(log)}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):  # a pool child left behind, if any
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def pid_of(worker_name: str) -> int:
    """The pid in a ``<app_id>@<host>:<pid>`` fingerprint."""
    return int(worker_name.rpartition(":")[2])


async def test_prefork_worker_streams_every_task_to_its_end(
    broker_url: str,
    exchange: str,
    collector: Collector,
    celery_queue: str,
    unique: str,
    tmp_path: Path,
) -> None:
    if importlib.util.find_spec("celery") is None:
        pytest.fail('celery is not installed: pip install "celery>=5.3"', pytrace=False)
    env = example_env(broker_url, exchange, tmp_path)
    app = worker_app(tmp_path, control_exchange=celery_queue)
    log = tmp_path / "worker.log"
    started = time.monotonic()

    with celery_worker(app, celery_queue, f"streamer-test-{unique}", env, log) as worker:
        ready_after = time.monotonic() - started
        sent = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "send.py", "--queue", celery_queue, "--json",
             "--items", str(ITEMS), *REPOS, "broken"],
            cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        task_ids: dict[str, str] = json.loads(sent.stdout)
        assert sorted(task_ids) == sorted([*REPOS, "broken"])
        repo_of = {task_id: repo for repo, task_id in task_ids.items()}

        def ended() -> set[str]:
            return {
                body["task_id"]
                for _, body, _ in collector.messages
                if body["task_id"] in repo_of and body["state"] in TERMINAL
            }

        deadline = time.monotonic() + 60
        while ended() != set(repo_of):
            missing = sorted(repo_of[t] for t in set(repo_of) - ended())
            assert worker.poll() is None, f"worker died; missing {missing}:\n{tail(log)}"
            assert time.monotonic() < deadline, (
                f"no terminal report after 60 s for {missing}:\n{tail(log)}"
            )
            await asyncio.sleep(0.1)
        ran_for = time.monotonic() - started
        parent_pid = worker.pid
    assert worker.returncode == 0, f"worker exit code {worker.returncode}:\n{tail(log)}"

    per_task: dict[str, list[tuple[dict[str, Any], Any]]] = defaultdict(list)
    for _, body, props in collector.messages:
        assert body["task_id"] in repo_of, f"report of a task we did not send: {body}"
        per_task[body["task_id"]].append((body, props))

    pids: set[int] = set()
    for task_id, reports in per_task.items():
        repo = repo_of[task_id]
        bodies = [body for body, _ in reports]
        seqs = [body["seq"] for body in bodies]
        assert all(a < b for a, b in itertools.pairwise(seqs)), f"{repo}: seq {seqs}"
        states = [body["state"] for body in bodies]
        assert states.count(states[-1]) == 1 and states[-1] in TERMINAL, f"{repo}: {states}"
        assert set(states[:-1]) <= {"running"}, f"{repo}: {set(states[:-1])}"
        # One task runs in one pool child, never in the worker's main process, and the
        # publisher's app_id (made in the child after the fork) names that same child.
        names = {body["worker_name"] for body in bodies}
        assert len(names) == 1, f"{repo}: reports from {names}"
        (name,) = names
        assert {props.app_id for _, props in reports} == {name}
        assert pid_of(name) != parent_pid, f"{repo}: reported by the worker's main process"
        pids.add(pid_of(name))
        assert {body["task_type"] for body in bodies} == {"sync"}
        assert all(body["tags"] == [f"repo:{repo}"] for body in bodies)

        last = bodies[-1]
        progress = last["progress_report"]
        assert progress["metadata"]["items_done"] == progress["metadata"]["items_total"]
        if repo == "broken":
            assert last["state"] == "error", f"{repo}: {last}"
            assert last["error"]["code"] == "RepositoryUnavailable", last["error"]
            assert "connection reset" in last["error"]["description"]
            assert progress["content"]["items_done"] == ITEMS // 2
            assert last["seq"] == 1 + METADATA + ITEMS // 2 + 1
        else:
            assert last["state"] == "finished", f"{repo}: {last.get('error')}"
            assert progress["content"]["items_done"] == progress["content"]["items_total"]
            assert progress["content"]["items_total"] == ITEMS
            assert progress["content"]["size_done"] == progress["content"]["size_total"]
            assert last["result"] == {"repo": repo, "units": ITEMS, "bytes": ITEMS * 65536}
            # running + every progress call + finished were published (seq counts them all;
            # coalescing may have skipped some on the wire, never the terminal one)
            assert last["seq"] == 1 + METADATA + ITEMS + 1
    assert len(per_task) == len(REPOS) + 1
    assert len(pids) >= 2, f"every task ran in one child ({pids}): the pool did not spread"

    received = {repo_of[t]: len(r) for t, r in per_task.items()}
    print(
        f"worker ready after {ready_after:.1f} s, all tasks ended after {ran_for:.1f} s; "
        f"{len(pids)} pool children; reports received per task: {received}"
    )
