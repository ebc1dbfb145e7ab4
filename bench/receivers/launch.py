"""The parent's handle on one receiver process: start it, read what it received without
costing it CPU, sample its CPU time, stop it.

How each one is counted, cheapest for the receiver first:

- ``streamer listen --json``: stdout goes to a file; the parent counts its lines and, after the
  run, reads every line's ``task_id``/``seq`` for gaps (the file costs listen one write per
  batch, as /dev/null would; no pipe reader competes for the CPU while it is timed);
- ``streamer watch``: stdout (not a TTY) to a file; its last summary line has "N received" and
  "N gaps" (``streamer.watch._header``);
- ``streamer dashboard``: ``/api/tasks?limit=1`` (the summary: received, gaps over the board's
  tasks); it is asked only after publishing ends, and the CPU sample is taken before the last
  question so the final answer is not charged to it;
- the bench's own children (receivers/children.py, peers.py): a status file they rewrite every
  0.2 s.

CPU is user+system of the process (every thread) from psutil, as the kernel accounts it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

from .broker import BINDING_KEY
from .children import _Seen, drain_tables

STREAMER = str(Path(sys.executable).with_name("streamer"))
TOOLS = ("dashboard", "watch", "listen")
_RECEIVED = re.compile(r"([\d,]+) received")
_GAPS = re.compile(r"([\d,]+) gaps")


class _Line(msgspec.Struct):
    report: _Seen


_decode_line = msgspec.json.Decoder(_Line).decode


def _env() -> dict[str, str]:
    """The parent's environment without STREAMER_* (the command line says it all)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """One receiver process. ``count()`` is (received so far, gaps or None)."""

    def __init__(self, name: str, argv: list[str], tmp: Path, stdout: Path | None = None) -> None:
        import psutil

        self.name, self.tmp = name, tmp
        self.log = tmp / "stderr.txt"
        self.stdout = stdout or tmp / "stdout.txt"
        with open(self.stdout, "wb") as out, open(self.log, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, env=_env())
        self.ps = psutil.Process(self.proc.pid)
        self.returncode: int | None = None
        self._cpu = 0.0
        self.last_split = (0.0, 0.0)  # (user, system) of the last cpu() sample

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu(self) -> float:
        """User+system seconds so far (the last known value once it has exited)."""
        try:
            t = self.ps.cpu_times()
        except Exception:  # psutil.NoSuchProcess: gone
            return self._cpu
        self._cpu = float(t.user + t.system)
        self.last_split = (float(t.user), float(t.system))
        return self._cpu

    def count(self) -> tuple[int, int | None]:
        raise NotImplementedError

    def final(self) -> dict[str, Any]:
        """Stop it and return its last word: received, gaps (and anything else it knows)."""
        self.stop()
        received, gaps = self.count()
        return {"received": received, "gaps": gaps}

    def stop(self, timeout: float = 15.0) -> None:
        if self.returncode is not None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class Dashboard(Running):
    def __init__(self, name: str, spec: dict[str, Any], tmp: Path) -> None:
        self.port = _free_port()
        argv = [STREAMER, "dashboard", "--url", spec["url"], "-e", spec["exchange"]]
        argv += ["--port", str(self.port)]
        if spec.get("queue"):
            config = tmp / "drain.toml"
            config.write_text(_toml(spec))
            argv += ["--config", str(config)]
        super().__init__(name, argv, tmp)

    def _get(self, path: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    def count(self) -> tuple[int, int | None]:
        try:
            summary = self._get("/api/tasks?limit=1")["summary"]
        except OSError:
            return 0, None
        return int(summary["received"]), int(summary["gaps"])

    def final(self) -> dict[str, Any]:
        data = self._get("/api/tasks")
        summary, rows = data["summary"], data["tasks"]
        self.stop()
        return {
            "received": summary["received"],
            "gaps": summary["gaps"],
            "board_gaps": sum(r["gaps"] for r in rows),
            "tasks": summary["tasks"],
            "malformed": summary["malformed"],
            "t_last": max((r["seen"] for r in rows), default=None),
        }


def _toml(spec: dict[str, Any]) -> str:
    """The dashboard's --config: the drain queue as [[bindings]] and [queues.<name>]."""
    (binding,), queues = drain_tables(spec)
    ((name, queue),) = queues.items()
    args = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in queue["arguments"].items())
    return (
        "[[bindings]]\n"
        f"exchange = {json.dumps(binding['exchange'])}\n"
        f"queue = {json.dumps(name)}\n"
        f"routing_keys = [{json.dumps(BINDING_KEY)}]\n\n"
        f"[queues.{json.dumps(name)}]\n"
        "durable = true\nauto_delete = false\nexclusive = false\n"
        f"arguments = {{ {args} }}\n"
    )


class Watch(Running):
    def __init__(self, name: str, spec: dict[str, Any], tmp: Path) -> None:
        argv = [STREAMER, "watch", "--url", spec["url"], "-e", spec["exchange"]]
        super().__init__(name, argv, tmp)

    def count(self) -> tuple[int, int | None]:
        with open(self.stdout, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - 4096, 0))
            lines = f.read().decode(errors="replace").splitlines()
        for line in reversed(lines):
            received, gaps = _RECEIVED.search(line), _GAPS.search(line)
            if received and gaps:
                return int(received[1].replace(",", "")), int(gaps[1].replace(",", ""))
        return 0, None


class Listen(Running):
    def __init__(self, name: str, spec: dict[str, Any], tmp: Path) -> None:
        argv = [STREAMER, "listen", "--url", spec["url"], "-e", spec["exchange"], "--json"]
        super().__init__(name, argv, tmp)
        self._offset = self._lines = 0

    def count(self) -> tuple[int, int | None]:
        """Lines so far (reads only what was appended since the last call)."""
        with open(self.stdout, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        self._lines += chunk.count(b"\n")
        return self._lines, None

    def final(self) -> dict[str, Any]:
        self.stop()
        last: dict[str, int] = {}
        gaps = lines = bad = 0
        with open(self.stdout, "rb") as f:
            for line in f:
                lines += 1
                try:
                    seen = _decode_line(line).report
                except msgspec.DecodeError:
                    bad += 1
                    continue
                prev = last.get(seen.task_id, 0)
                if seen.seq > prev:
                    gaps += seen.seq - prev - 1
                    last[seen.task_id] = seen.seq
        return {"received": lines, "gaps": gaps, "undecodable_lines": bad}


class Child(Running):
    """A receiver of the bench's own (children.py, peers.py), run as ``receive.py --child``."""

    def __init__(self, name: str, role: str, spec: dict[str, Any], tmp: Path) -> None:
        self.status = tmp / "status.json"
        spec = {**spec, "status": str(self.status)}
        script = str(Path(__file__).resolve().parents[1] / "receive.py")
        argv = [sys.executable, script, "--child", role, "--spec", json.dumps(spec)]
        super().__init__(name, argv, tmp)

    def read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def count(self) -> tuple[int, int | None]:
        data = self.read()
        return int(data.get("count", 0)), data.get("gaps")

    def final(self) -> dict[str, Any]:
        self.stop()
        data = self.read()
        out = {
            "received": data.get("count", 0),
            "gaps": data.get("gaps"),
            "t_last": data.get("t_last") if data.get("done") else None,
        }
        if data.get("batches") and data.get("count"):
            out["reports_per_batch"] = data["count"] / data["batches"]
        if data.get("error"):
            out["child_error"] = data["error"]
        return out


def launch(name: str, spec: dict[str, Any]) -> Running:
    """Start receiver ``name`` on ``spec["exchange"]`` (drain: on ``spec["queue"]``)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"receive-{name}-"))
    drain = bool(spec.get("queue"))
    if name == "dashboard":
        return Dashboard(name, spec, tmp)
    if name == "watch" and not drain:
        return Watch(name, spec, tmp)
    if name == "listen" and not drain:
        return Listen(name, spec, tmp)
    role = f"{name}-tool" if name in TOOLS else name
    return Child(name, role, spec, tmp)


def settle(rec: Running, expected: int, quiet: float, timeout: float) -> tuple[int, float]:
    """Wait until ``expected`` arrived or nothing did for ``quiet`` s; (count, CPU at the end).

    The CPU sample precedes each question, so the last answer is not charged to the receiver.
    """
    deadline = time.monotonic() + timeout
    last, changed = -1, time.monotonic()
    while True:
        time.sleep(0.1)
        cpu = rec.cpu()
        count = rec.count()[0]
        now = time.monotonic()
        if count != last:
            last, changed = count, now
        if count >= expected or now - changed >= quiet or now > deadline or not rec.alive():
            return count, cpu


def cleanup(rec: Running) -> None:
    rec.stop()
    for path in sorted(rec.tmp.glob("*")):
        path.unlink(missing_ok=True)
    rec.tmp.rmdir()
