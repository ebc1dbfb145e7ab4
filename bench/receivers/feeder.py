"""The publisher of bench/receive.py: one long-lived child that builds the reports once and
publishes them with ``streamer.Publisher`` whenever the parent asks.

Why long-lived: building and decoding 200,000 + 500,000 reports takes longer than publishing
them, and it would be done again for every receiver of every round. Every request still gets a
fresh ``Publisher`` (new connection, seq from 1), so the runs do not share publishing state;
the workload sits in a frozen GC generation and is never rescanned.

Why a command line on stdin: the parent samples the receiver's CPU time just before it sends
the command, so the receiver's window holds the publishing phase and nothing of the build.

The loop is bench/clients/with_streamer.py's: ``publish()`` paced by ``throttle(window)``
every 100 reports, so every report is written (none coalesced) at the rate confirms allow.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clients import Workload, build_messages, digest
from clients.with_streamer import STREAMER_PACE_EVERY, build_reports


@dataclass(frozen=True)
class ReportSet:
    reports: list[Any]
    pace_every: int
    sha256: str
    body_bytes: int


def build(tasks: int, total: int) -> ReportSet:
    """``total`` reports over ``tasks`` tasks, round-robin (the throughput workload's bodies)."""
    from streamer import Report

    per_task = -(-total // tasks)
    messages = build_messages(Workload(tasks=tasks, reports=per_task))[:total]
    pace = max(1, min(STREAMER_PACE_EVERY, len({rk for rk, _ in messages})))
    sizes = sorted(len(body) for _, body in messages)
    return ReportSet(
        build_reports(Report, messages), pace, digest(messages), sizes[len(sizes) // 2]
    )


async def publish_all(url: str, exchange: str, rs: ReportSet, window: int) -> dict[str, Any]:
    """Publish the set once (timed from the first publish to the flush), return the figures."""
    from streamer import Publisher

    reports, pace_every = rs.reports, rs.pace_every
    async with Publisher(url=url, exchange=exchange) as pub:
        publish, throttle = pub.publish, pub.throttle
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for i, report in enumerate(reports, 1):
            publish(report)
            if i % pace_every == 0:
                await throttle(window)
        flushed = await pub.flush(timeout=300)
        elapsed = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        stats = pub.stats
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "published": stats.published,
        "confirmed": stats.confirmed,
        "coalesced": stats.coalesced,
        "dropped": stats.dropped,
        "elapsed_s": elapsed,
        "rate": stats.confirmed / elapsed if elapsed > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_us_per_report": cpu / stats.confirmed * 1e6 if stats.confirmed else None,
        "error": None if flushed else "flush() timed out",
    }


def feeder_main(spec: dict[str, Any]) -> int:
    """Build the sets named in ``spec["sets"]``, say ``ready``, then serve one command a line:
    ``{"exchange": ..., "set": ...}`` -> one JSON line of figures; EOF ends it."""
    import uvloop

    sets = {name: build(spec["tasks"], total) for name, total in spec["sets"].items()}
    gc.collect()
    gc.freeze()
    info = {
        name: {"reports": len(s.reports), "sha256": s.sha256, "body_bytes_median": s.body_bytes}
        for name, s in sets.items()
    }
    _say({"ready": True, "sets": info})
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            result = uvloop.run(
                publish_all(spec["url"], cmd["exchange"], sets[cmd["set"]], spec["window"])
            )
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        _say(result)
    return 0


def _say(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


class Feeder:
    """The parent's handle on the feeder child."""

    def __init__(self, argv: Sequence[str], timeout: float = 600.0) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.timeout = timeout
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"the feeder did not start: {ready}")
        self.sets: dict[str, Any] = ready["sets"]

    def _read(self) -> dict[str, Any]:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the feeder gave no answer (exit code {self.proc.poll()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def publish(self, exchange: str, which: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"exchange": exchange, "set": which}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
