"""What every client shares: the workload, the measuring, the result record and the two
publishing loops (one at a time, sliding window), so each client module holds only its own
library's calls and every client is timed and counted the same way."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
import resource
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]

CONTENT_TYPE = "application/json"
TRANSIENT = 1  # delivery_mode 1: every client publishes non-persistent messages

# (routing key, body) in publish order.
Message = tuple[str, bytes]


class Unavailable(Exception):
    """streamer cannot be imported, so there is nothing to benchmark (not a failure)."""


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    """Shape of the run; the seed makes bodies identical in every subprocess."""

    tasks: int = 1_000
    reports: int = 400
    size: int = 600
    seed: int = 20_240_601

    @property
    def total(self) -> int:
        return self.tasks * self.reports


def build_messages(w: Workload) -> list[Message]:
    """Build every report body up front, round-robin over tasks.

    Each child rebuilds them from the seed instead of receiving them through a
    pipe: cheaper, and the sha256 in the results proves the bytes were equal.
    ``sent_at`` (Unix seconds) is synthetic, a fixed base plus 1 ms per report,
    for the same reason: a wall-clock value would make the bodies differ.
    """
    import msgspec

    rng = random.Random(w.seed)
    task_ids = [uuid.UUID(int=rng.getrandbits(128), version=4).hex for _ in range(w.tasks)]
    routing_keys = [f"tasks.{tid}" for tid in task_ids]
    task_types = [
        "pulp_rpm.app.tasks.synchronizing.synchronize",
        "pulpcore.app.tasks.export.pulp_export",
        "pulp_file.app.tasks.publishing.publish",
    ]
    workers = [f"worker-{rng.randrange(16)}@pulp-{rng.randrange(4)}.example.net" for _ in task_ids]
    base = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC).timestamp()
    encode = msgspec.json.encode
    messages: list[Message] = []
    last = w.reports - 1
    for r in range(w.reports):
        state = "waiting" if r == 0 else "finished" if r == last else "running"
        for t, tid in enumerate(task_ids):
            seq = r * w.tasks + t
            items_total = 50 + (t % 200)
            bytes_total = items_total * 1_048_576
            # Pulp 2 style: progress_report is an object keyed by step.
            steps: dict[str, dict[str, Any]] = {
                "sync.downloading.artifacts": {
                    "message": "Downloading Artifacts",
                    "state": state,
                    "done": items_total * r // max(last, 1),
                    "total": items_total,
                },
                "sync.downloading.bytes": {
                    "message": "Downloading Bytes",
                    "state": state,
                    "done": bytes_total * r // max(last, 1),
                    "total": bytes_total,
                    "suffix": "",
                },
            }
            # Every field of streamer's Task Report, in its order, so the body streamer
            # encodes from the same report has the same size as everyone else's.
            report: dict[str, Any] = {
                "task_id": tid,
                "state": state,
                "task_type": task_types[t % len(task_types)],
                "progress_report": steps,
                "result": None,
                "error": None,
                "spawned_tasks": [],
                "tags": ["bench", f"repo-{t % 37}", "sync"],
                "worker_name": workers[t],
                "queue": None,
                "group_id": None,
                "start_time": None,
                "finish_time": None,
                "seq": seq,
                "sent_at": base + seq / 1000,
            }
            body = encode(report)
            if len(body) < w.size:  # pad the suffix so every body is exactly `size` bytes
                steps["sync.downloading.bytes"]["suffix"] = "." * (w.size - len(body))
                body = encode(report)
            messages.append((routing_keys[t], body))
    return messages


def digest(messages: Sequence[Message]) -> str:
    """Fingerprint of the workload, compared across children."""
    h = hashlib.sha256()
    for rk, body in messages:
        h.update(rk.encode())
        h.update(body)
    return h.hexdigest()


# --------------------------------------------------------------------------- measuring


@dataclass
class RunOptions:
    """Knobs shared by all runners (the workload itself is the message list)."""

    window: int = 1_000
    batch: int = 100
    time_cap: float = 30.0  # seconds; only applied to one-at-a-time clients
    broker_pid: int | None = None
    # Extra keyword arguments for streamer.Publisher(...), from --streamer-option.
    streamer_options: dict[str, Any] = field(default_factory=dict)


class Meter:
    """Wall time, own CPU (all threads) and broker CPU around the publish phase."""

    def __init__(self, broker_pid: int | None) -> None:
        self._broker = None
        if broker_pid:
            try:
                import psutil

                self._broker = psutil.Process(broker_pid)
            except Exception:  # broker CPU is a nice-to-have, never fail the run for it
                self._broker = None
        self.elapsed = self.user = self.sys = 0.0
        self.broker_cpu: float | None = None

    def _broker_cpu(self) -> float | None:
        if self._broker is None:
            return None
        try:
            t = self._broker.cpu_times()
            return float(t.user + t.system)
        except Exception:
            return None

    def start(self) -> None:
        self._b0 = self._broker_cpu()
        self._r0 = resource.getrusage(resource.RUSAGE_SELF)
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self.elapsed = time.perf_counter() - self._t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        b1 = self._broker_cpu()
        self.user = r1.ru_utime - self._r0.ru_utime
        self.sys = r1.ru_stime - self._r0.ru_stime
        if self._b0 is not None and b1 is not None:
            self.broker_cpu = b1 - self._b0


class Latencies:
    """Confirm latencies as weighted samples (seconds).

    Weighted so batched clients can record one sample per (batch, ack) pair
    instead of paying a Python append per message inside the timed phase.
    """

    def __init__(self) -> None:
        self.values: list[float] = []
        self.weights: list[int] = []

    def add(self, seconds: float, weight: int = 1) -> None:
        self.values.append(seconds)
        self.weights.append(weight)

    def percentile(self, q: float) -> float | None:
        if not self.values:
            return None
        pairs = sorted(zip(self.values, self.weights, strict=True))
        total = sum(self.weights)
        rank = max(1, int(q / 100 * total + 0.999999))  # nearest-rank
        seen = 0
        for value, weight in pairs:
            seen += weight
            if seen >= rank:
                return value
        return pairs[-1][0]


def summarize(
    meter: Meter,
    *,
    confirmed: int,
    attempted: int,
    planned: int,
    nacked: int = 0,
    dropped: int = 0,
    latencies: Latencies | None = None,
    latency_basis: str = "per-message",
    p50_ms: float | None = None,
    p99_ms: float | None = None,
    errors: int = 0,
    error: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Turn raw counters into the result record every runner returns."""
    if latencies is not None:
        p50, p99 = latencies.percentile(50), latencies.percentile(99)
        p50_ms = None if p50 is None else p50 * 1e3
        p99_ms = None if p99 is None else p99 * 1e3
    cpu = meter.user + meter.sys
    return {
        "confirmed": confirmed,
        "attempted": attempted,
        "planned": planned,
        "capped": attempted < planned,
        "nacked": nacked,
        "dropped": dropped,
        "errors": errors,
        "error": error,
        "elapsed_s": meter.elapsed,
        "msgs_per_s": confirmed / meter.elapsed if meter.elapsed > 0 else 0.0,
        "cpu_user_s": meter.user,
        "cpu_sys_s": meter.sys,
        "cpu_us_per_msg": cpu / confirmed * 1e6 if confirmed else None,
        "broker_cpu_s": meter.broker_cpu,
        "broker_cpu_us_per_msg": (
            meter.broker_cpu / confirmed * 1e6 if confirmed and meter.broker_cpu else None
        ),
        "latency_p50_ms": p50_ms,
        "latency_p99_ms": p99_ms,
        "latency_basis": latency_basis,
        **extra,
    }


T = TypeVar("T")


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """All asyncio clients run on uvloop, as they would in production."""
    import uvloop

    return uvloop.run(coro)


# --------------------------------------------------------------------------- publishing loops


class OneAtATime:
    """The loop of the clients that wait for each confirm: time, cap and count each publish.

    Iterating yields the messages with the meter running, stops once ``opts.time_cap``
    seconds have passed (0 = never) and records each message's latency when the loop
    body (the publish, blocking or awaited) comes back for the next one. The body
    counts the outcome in ``confirmed`` or ``nacked``.
    """

    def __init__(self, messages: Sequence[Message], opts: RunOptions) -> None:
        self.messages, self.time_cap = messages, opts.time_cap
        self.meter, self.lat = Meter(opts.broker_pid), Latencies()
        self.confirmed = self.nacked = self.attempted = 0

    def __iter__(self) -> Iterator[Message]:
        perf, lat = time.perf_counter, self.lat
        self.meter.start()
        deadline = perf() + self.time_cap if self.time_cap > 0 else float("inf")
        for rk, body in self.messages:
            t0 = perf()
            if t0 > deadline:
                break
            self.attempted += 1
            yield rk, body
            lat.add(perf() - t0)
        self.meter.stop()

    def summary(self) -> dict[str, Any]:
        return summarize(
            self.meter,
            confirmed=self.confirmed,
            attempted=self.attempted,
            planned=len(self.messages),
            nacked=self.nacked,
            latencies=self.lat,
        )


async def pipelined(
    publish: Callable[[str, bytes], Awaitable[Any]],
    nack_types: tuple[type[BaseException], ...],
    messages: Sequence[Message],
    opts: RunOptions,
) -> dict[str, Any]:
    """Sliding window of ``opts.window`` unconfirmed publishes, one task each.

    A semaphore rather than gather() over fixed windows, so a slow confirm
    does not stall the next 999 publishes. Latency is per message: from just
    before the publish call to its confirm (includes time queued in the client).
    """
    meter, lat = Meter(opts.broker_pid), Latencies()
    counts = {"confirmed": 0, "nacked": 0, "errors": 0}
    first_error: list[str] = []
    sem = asyncio.Semaphore(opts.window)
    perf = time.perf_counter
    pending: set[asyncio.Task[None]] = set()

    async def one(rk: str, body: bytes) -> None:
        t0 = perf()
        try:
            await publish(rk, body)
            counts["confirmed"] += 1
        except nack_types:
            counts["nacked"] += 1
        except Exception as exc:
            counts["errors"] += 1
            if not first_error:
                first_error.append(repr(exc))
        finally:
            lat.add(perf() - t0)
            sem.release()

    meter.start()
    for rk, body in messages:
        await sem.acquire()
        task = asyncio.create_task(one(rk, body))
        pending.add(task)
        task.add_done_callback(pending.discard)
    for _ in range(opts.window):  # wait for the tail of the window to settle
        await sem.acquire()
    meter.stop()
    return summarize(
        meter,
        confirmed=counts["confirmed"],
        attempted=len(messages),
        planned=len(messages),
        nacked=counts["nacked"],
        errors=counts["errors"],
        error=first_error[0] if first_error else None,
        latencies=lat,
    )
