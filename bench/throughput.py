#!/usr/bin/env python
"""End-to-end publisher throughput: streamer against common Python AMQP clients.

Every client publishes the same prebuilt task reports (same bytes, same order)
to a topic exchange with publisher confirms on, and each runs in its own fresh
subprocess so that the CPU time we charge to it (user+sys of the child,
publish phase only) is not polluted by the other clients, the parent, imports
or connection setup.

The ``blaster`` client is a reference, not a product: a bare asyncio.Protocol
that writes pre-encoded frames in batches. It shows roughly the rate the broker
allows on this machine, i.e. the ceiling the real clients are measured against.

The machine is shared with the broker and noisy (one run per client swings
+-30%), so the clients run in ``--repeat`` interleaved rounds and the table
shows medians; the ratios are printed per round as well, to show the spread.

Examples::

    .venv/bin/python bench/throughput.py                       # full workload, 3 rounds
    .venv/bin/python bench/throughput.py --tasks 5 --reports 20 --repeat 1  # smoke run
    .venv/bin/python bench/throughput.py --clients blaster,aiormq-pipelined
    .venv/bin/python bench/throughput.py --clients blaster,streamer --streamer-option channels=1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import hashlib
import json
import os
import platform
import random
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

CONTENT_TYPE = "application/json"
TRANSIENT = 1  # delivery_mode 1: every client publishes non-persistent messages
QUEUE_ARGUMENTS = {"x-max-length": 10_000, "x-overflow": "drop-head"}
BINDING_KEY = "tasks.#"

# (routing key, body) in publish order.
Message = tuple[str, bytes]


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


# --------------------------------------------------------------------------- clients


def run_aio_pika_await(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """aio-pika, one ``await exchange.publish()`` at a time: a round-trip per message."""
    import aio_pika
    from aio_pika.exceptions import DeliveryError

    async def main() -> dict[str, Any]:
        meter, lat = Meter(opts.broker_pid), Latencies()
        confirmed = nacked = attempted = 0
        async with await aio_pika.connect(url) as conn:
            channel = await conn.channel(publisher_confirms=True)
            ex = await channel.get_exchange(exchange, ensure=False)
            perf = time.perf_counter
            meter.start()
            deadline = perf() + opts.time_cap if opts.time_cap > 0 else float("inf")
            for rk, body in messages:
                t0 = perf()
                if t0 > deadline:
                    break
                attempted += 1
                msg = aio_pika.Message(body, content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)
                try:
                    await ex.publish(msg, rk, mandatory=False)
                    confirmed += 1
                except DeliveryError:
                    nacked += 1
                lat.add(perf() - t0)
            meter.stop()
        return summarize(
            meter,
            confirmed=confirmed,
            attempted=attempted,
            planned=len(messages),
            nacked=nacked,
            latencies=lat,
        )

    return _run_async(main())


async def _pipelined(
    publish: Callable[[str, bytes], Any],
    nack_types: tuple[type[BaseException], ...],
    messages: Sequence[Message],
    opts: RunOptions,
) -> tuple[Meter, Latencies, dict[str, Any]]:
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
    extra = {**counts, "error": first_error[0] if first_error else None}
    return meter, lat, extra


def run_aio_pika_pipelined(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """aio-pika with up to ``window`` publishes awaiting their confirm."""
    import aio_pika
    from aio_pika.exceptions import DeliveryError

    async def main() -> dict[str, Any]:
        async with await aio_pika.connect(url) as conn:
            channel = await conn.channel(publisher_confirms=True)
            ex = await channel.get_exchange(exchange, ensure=False)

            def publish(rk: str, body: bytes) -> Any:
                msg = aio_pika.Message(body, content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)
                return ex.publish(msg, rk, mandatory=False)

            meter, lat, c = await _pipelined(publish, (DeliveryError,), messages, opts)
        return summarize(
            meter,
            confirmed=c["confirmed"],
            attempted=len(messages),
            planned=len(messages),
            nacked=c["nacked"],
            errors=c["errors"],
            error=c["error"],
            latencies=lat,
        )

    return _run_async(main())


def run_aiormq_pipelined(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """Raw aiormq ``basic_publish`` with up to ``window`` unconfirmed.

    ``wait=False`` skips aiormq's per-message drain future, which the default
    (``wait=True``) awaits while holding the channel lock; the confirm is still
    awaited per message. It measured ~5% faster here, so this is aiormq's best.
    """
    import aiormq
    from aiormq.exceptions import DeliveryError
    from pamqp.commands import Basic

    async def main() -> dict[str, Any]:
        async with aiormq.connect(url) as conn:
            channel = await conn.channel(publisher_confirms=True)

            def publish(rk: str, body: bytes) -> Any:
                # A fresh Properties per message: aiormq writes a message_id into it.
                props = Basic.Properties(content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)
                return channel.basic_publish(
                    body, exchange=exchange, routing_key=rk, properties=props, wait=False
                )

            meter, lat, c = await _pipelined(publish, (DeliveryError,), messages, opts)
        return summarize(
            meter,
            confirmed=c["confirmed"],
            attempted=len(messages),
            planned=len(messages),
            nacked=c["nacked"],
            errors=c["errors"],
            error=c["error"],
            latencies=lat,
        )

    return _run_async(main())


def run_pika(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """pika BlockingConnection + confirm_delivery(): each publish waits for its ack.

    The slow baseline, so it stops after ``opts.time_cap`` seconds and the rate
    is over what it managed.
    """
    import pika
    from pika.exceptions import NackError

    meter, lat = Meter(opts.broker_pid), Latencies()
    confirmed = nacked = attempted = 0
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        props = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)
        publish, perf = channel.basic_publish, time.perf_counter
        meter.start()
        deadline = perf() + opts.time_cap if opts.time_cap > 0 else float("inf")
        for rk, body in messages:
            t0 = perf()
            if t0 > deadline:
                break
            attempted += 1
            try:
                publish(exchange, rk, body, props, mandatory=False)
                confirmed += 1
            except NackError:
                nacked += 1
            lat.add(perf() - t0)
        meter.stop()
    finally:
        conn.close()
    return summarize(
        meter,
        confirmed=confirmed,
        attempted=attempted,
        planned=len(messages),
        nacked=nacked,
        latencies=lat,
    )


def run_kombu(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """kombu Producer on py-amqp with ``confirm_publish``: one round-trip per message."""
    from amqp.exceptions import MessageNacked
    from kombu import Connection, Exchange, Producer

    meter, lat = Meter(opts.broker_pid), Latencies()
    confirmed = nacked = attempted = 0
    # kombu maps amqp:// (and amqps://) to its py-amqp transport.
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        conn.connect()
        ex = Exchange(exchange, type="topic", durable=False, auto_delete=False)
        producer = Producer(conn.channel(), exchange=ex, auto_declare=False)
        publish, perf = producer.publish, time.perf_counter
        meter.start()
        deadline = perf() + opts.time_cap if opts.time_cap > 0 else float("inf")
        for rk, body in messages:
            t0 = perf()
            if t0 > deadline:
                break
            attempted += 1
            try:
                publish(
                    body,
                    routing_key=rk,
                    content_type=CONTENT_TYPE,
                    content_encoding="utf-8",
                    delivery_mode=TRANSIENT,
                    retry=False,
                )
                confirmed += 1
            except MessageNacked:
                nacked += 1
            lat.add(perf() - t0)
        meter.stop()
    return summarize(
        meter,
        confirmed=confirmed,
        attempted=attempted,
        planned=len(messages),
        nacked=nacked,
        latencies=lat,
    )


# --------------------------------------------------------------------------- blaster


class _BlasterProtocol(asyncio.Protocol):
    """Bare AMQP publisher: pamqp for the handshake, pre-encoded publish batches after.

    Confirms are settled by delivery tag, honouring ``multiple=True``. Latency
    is per batch: every message of a batch is stamped with the batch's write
    time and recorded as one weighted sample per (batch, ack) pair.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.rpc: asyncio.Queue[Any] = asyncio.Queue()  # non-confirm frames, or an exception
        self.blocked = self.paused = False
        # publish phase state, set by start_publishing()
        self.chunks: list[bytes] = []
        self.chunk_sizes: list[int] = []
        self.sent_at: list[float] = []
        self.window = self.batch = self.total = 0
        self.next_chunk = self.sent = self.settled = self.acked = self.nacked = 0
        self.floor = 0  # every tag <= floor is settled
        self.loose: set[int] = set()  # tags > floor settled one by one
        self.lat = Latencies()
        self.done: asyncio.Future[None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, hence the cast.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection lost: {exc!r}"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()

    def data_received(self, data: bytes) -> None:
        from pamqp import commands, frame

        self.buf += data
        while len(self.buf) >= 8:
            (size,) = struct.unpack_from(">I", self.buf, 3)
            end = 8 + size
            if len(self.buf) < end:
                return
            _, _channel, value = frame.unmarshal(bytes(self.buf[:end]))
            del self.buf[:end]
            if isinstance(value, commands.Basic.Ack):
                self.settle(value.delivery_tag, value.multiple, nack=False)
            elif isinstance(value, commands.Basic.Nack):
                self.settle(value.delivery_tag, value.multiple, nack=True)
            elif isinstance(value, commands.Connection.Blocked):
                self.blocked = True
            elif isinstance(value, commands.Connection.Unblocked):
                self.blocked = False
                self.pump()
            elif isinstance(value, (commands.Connection.Close, commands.Channel.Close)):
                self._fail(ConnectionError(f"closed by broker: {value!r}"))
            else:
                self.rpc.put_nowait(value)

    # -- handshake helpers
    def send(self, value: Any, channel: int = 0) -> None:
        from pamqp import frame

        assert self.transport is not None
        self.transport.write(frame.marshal(value, channel))

    async def expect(self, kind: type) -> Any:
        value = await asyncio.wait_for(self.rpc.get(), 10)
        if isinstance(value, Exception):
            raise value
        if not isinstance(value, kind):
            raise ConnectionError(f"expected {kind.__name__}, got {value!r}")
        return value

    def _fail(self, exc: Exception) -> None:
        """Wake whoever waits: the publish phase, or a handshake step."""
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)
        self.rpc.put_nowait(exc)

    # -- publish phase
    def start_publishing(
        self, chunks: list[bytes], sizes: list[int], window: int, batch: int
    ) -> asyncio.Future[None]:
        self.chunks, self.chunk_sizes = chunks, sizes
        self.sent_at = [0.0] * len(chunks)
        self.window, self.batch = window, batch
        self.total = sum(sizes)
        self.done = asyncio.get_running_loop().create_future()
        if self.total == 0:
            self.done.set_result(None)
        self.pump()
        return self.done

    def pump(self) -> None:
        """Write whole batches while the unconfirmed count stays within the window."""
        if self.transport is None or self.done is None:
            return
        write, perf = self.transport.write, time.perf_counter
        chunks, sizes, n = self.chunks, self.chunk_sizes, len(self.chunks)
        while self.next_chunk < n and not (self.paused or self.blocked):
            size = sizes[self.next_chunk]
            if self.sent - self.settled + size > self.window:
                break
            self.sent_at[self.next_chunk] = perf()
            write(chunks[self.next_chunk])
            self.sent += size
            self.next_chunk += 1

    def settle(self, tag: int, multiple: bool, *, nack: bool) -> None:
        now = time.perf_counter()
        if multiple:
            lo, hi = self.floor + 1, tag
            if hi < lo:
                return
            loose_here = [t for t in self.loose if t <= hi] if self.loose else []
            for t in loose_here:
                self.loose.discard(t)
            count = hi - lo + 1 - len(loose_here)
            self._record(lo, hi, now, loose_here)
            self.floor = hi
        else:
            if tag <= self.floor or tag in self.loose:
                return
            self.loose.add(tag)
            count = 1
            self._record(tag, tag, now, [])
            while self.floor + 1 in self.loose:
                self.floor += 1
                self.loose.discard(self.floor)
        self.settled += count
        if nack:
            self.nacked += count
        else:
            self.acked += count
        if self.done is not None and self.settled >= self.total and not self.done.done():
            self.done.set_result(None)
            return
        self.pump()

    def _record(self, lo: int, hi: int, now: float, skip: list[int]) -> None:
        """One weighted latency sample per batch touched by tags lo..hi."""
        b = self.batch
        first, last = (lo - 1) // b, (hi - 1) // b
        for i in range(first, last + 1):
            a, z = max(lo, i * b + 1), min(hi, (i + 1) * b)
            weight = z - a + 1 - sum(1 for t in skip if a <= t <= z)
            if weight > 0:
                self.lat.add(now - self.sent_at[i], weight)


def _encode_publishes(
    exchange: str, messages: Sequence[Message], batch: int, frame_max: int
) -> tuple[list[bytes], list[int]]:
    """Pre-encode method + header + body frames, joined ``batch`` messages per chunk."""
    from pamqp import commands, frame
    from pamqp.header import ContentHeader

    props = commands.Basic.Properties(content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)
    method_by_rk: dict[str, bytes] = {}
    header_by_size: dict[int, bytes] = {}
    max_body = frame_max - 8
    chunks: list[bytes] = []
    sizes: list[int] = []
    parts: list[bytes] = []
    for i, (rk, body) in enumerate(messages):
        method = method_by_rk.get(rk)
        if method is None:
            method = frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=rk), 1)
            method_by_rk[rk] = method
        header = header_by_size.get(len(body))
        if header is None:
            header = frame.marshal(ContentHeader(body_size=len(body), properties=props), 1)
            header_by_size[len(body)] = header
        parts += (method, header)
        for off in range(0, len(body), max_body):
            piece = body[off : off + max_body]
            parts += (struct.pack(">BHI", 3, 1, len(piece)), piece, b"\xce")
        if (i + 1) % batch == 0 or i + 1 == len(messages):
            chunks.append(b"".join(parts))
            sizes.append((i % batch) + 1)
            parts = []
    return chunks, sizes


def run_blaster(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """Reference ceiling: pre-encoded publishes, ``batch`` per write, ``window`` unconfirmed."""
    from pamqp import commands
    from pamqp.header import ProtocolHeader

    parts = urlsplit(url)
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(
            _BlasterProtocol, parts.hostname or "127.0.0.1", parts.port or 5672
        )
        assert isinstance(proto, _BlasterProtocol)
        proto.send(ProtocolHeader())
        await proto.expect(commands.Connection.Start)
        proto.send(
            commands.Connection.StartOk(
                client_properties={
                    "product": "throughput-blaster",
                    "capabilities": {"publisher_confirms": True, "basic.nack": True},
                },
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            )
        )
        tune = await proto.expect(commands.Connection.Tune)
        frame_max = tune.frame_max or 131_072
        proto.send(commands.Connection.TuneOk(tune.channel_max, frame_max, heartbeat=0))
        proto.send(commands.Connection.Open(virtual_host=vhost))
        await proto.expect(commands.Connection.OpenOk)
        proto.send(commands.Channel.Open(), 1)
        await proto.expect(commands.Channel.OpenOk)
        proto.send(commands.Confirm.Select(), 1)
        await proto.expect(commands.Confirm.SelectOk)

        chunks, sizes = _encode_publishes(exchange, messages, opts.batch, frame_max)
        meter = Meter(opts.broker_pid)
        error = None
        meter.start()
        try:
            await proto.start_publishing(chunks, sizes, opts.window, opts.batch)
        except ConnectionError as exc:
            error = str(exc)
        meter.stop()

        if error is None:
            proto.send(commands.Connection.Close(200, "bye", class_id=0, method_id=0))
            with contextlib.suppress(ConnectionError, TimeoutError):
                await proto.expect(commands.Connection.CloseOk)
        assert proto.transport is not None
        proto.transport.close()
        return summarize(
            meter,
            confirmed=proto.acked,
            attempted=proto.sent,
            planned=len(messages),
            nacked=proto.nacked,
            latencies=proto.lat,
            latency_basis="per-batch",
            error=error,
            errors=int(error is not None),
        )

    return _run_async(main())


# --------------------------------------------------------------------------- streamer


class Unavailable(Exception):
    """streamer cannot be imported, so there is nothing to benchmark (not a failure)."""


# publish() never blocks: it buffers the report and, if the same task still has a report
# waiting to be written, replaces it (latest report per task wins). A load generator that
# publishes in a tight loop therefore never lets the writer run and most reports coalesce
# away. To have every report delivered, like the other clients, we pace ourselves to the
# confirm window with throttle(window), the same bound the pipelined clients get. Only once
# per this many reports: throttle() always yields to the loop, which per report would cost
# more than publish() itself.
STREAMER_PACE_EVERY = 100


def build_reports(report_type: type, messages: Sequence[Message]) -> list[Any]:
    """Decode the shared bodies into ``streamer.Report`` structs (before timing).

    Decoding the very bytes the other clients send keeps the logical content
    identical; streamer then does its own encoding inside the timed phase.
    """
    import msgspec

    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(report_type)
    return [decoder.decode(body) for _, body in messages]


def run_streamer(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """streamer.Publisher: ``publish()`` paced by ``throttle(window)``, then ``flush()``.

    Confirm latency comes from ``pub.stats`` because ``publish()`` returns
    nothing to time against (streamer's own histogram: log buckets, ~12% wide).
    Coalesced and dropped reports are reported as drops: msgs/s counts only
    confirmed messages, never accepted reports.
    """
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from streamer import Publisher, Report
    except ImportError as exc:
        raise Unavailable(f"import failed: {exc!r}") from exc
    reports = build_reports(Report, messages)
    # Pace at least once per round of tasks too, or with few tasks one task's reports
    # would coalesce between two throttle() calls (only matters for smoke-sized runs).
    pace_every = max(1, min(STREAMER_PACE_EVERY, len({rk for rk, _ in messages})))
    gc.collect()
    gc.freeze()

    async def main() -> dict[str, Any]:
        meter = Meter(opts.broker_pid)
        async with Publisher(url=url, exchange=exchange, **opts.streamer_options) as pub:
            publish, throttle, window = pub.publish, pub.throttle, opts.window
            meter.start()
            for i, report in enumerate(reports, 1):
                publish(report)
                if i % pace_every == 0:
                    await throttle(window)
            ok = await pub.flush(timeout=120)
            meter.stop()
            stats = pub.stats
        return summarize(
            meter,
            confirmed=stats.confirmed,
            attempted=len(reports),
            planned=len(reports),
            dropped=stats.coalesced + stats.dropped,
            p50_ms=stats.confirm_latency_p50 * 1e3,
            p99_ms=stats.confirm_latency_p99 * 1e3,
            latency_basis="stats",
            error=None if ok else "flush() returned False",
            published=stats.published,
            coalesced=stats.coalesced,
            streamer_dropped=stats.dropped,
            pending=stats.pending,
            dropped_by_reason=stats.dropped_by_reason,
            reports_per_s=len(reports) / meter.elapsed if meter.elapsed else 0.0,
        )

    return _run_async(main())


# --------------------------------------------------------------------------- harness

Runner = Callable[[str, str, Sequence[Message], RunOptions], dict[str, Any]]
CLIENTS: dict[str, Runner] = {
    "aio-pika-await": run_aio_pika_await,
    "aio-pika-pipelined": run_aio_pika_pipelined,
    "aiormq-pipelined": run_aiormq_pipelined,
    "pika": run_pika,
    "kombu": run_kombu,
    "blaster": run_blaster,
    "streamer": run_streamer,
}
# One round-trip per message: capped at --time-cap seconds so the run stays short.
SERIAL_CLIENTS = {"aio-pika-await", "pika", "kombu"}
RATIO_BASELINES = ("aio-pika-pipelined", "aiormq-pipelined", "blaster")


def mask_url(url: str) -> str:
    """Hide the password before a URL is printed or stored."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def child_main() -> int:
    """Subprocess entry: run one client, write its result as JSON to the given path."""
    spec = json.load(sys.stdin)
    name = spec["client"]
    workload = Workload(**spec["workload"])
    opts = RunOptions(**spec["options"])
    if name not in SERIAL_CLIENTS:
        opts.time_cap = 0.0
    messages = build_messages(workload)
    sha = digest(messages)
    # The workload lives for the whole run; keep the collector from rescanning it
    # and charging that to whichever client happened to trigger a collection.
    gc.collect()
    gc.freeze()
    try:
        result = CLIENTS[name](spec["url"], spec["exchange"], messages, opts)
    except Unavailable as exc:
        result = {"unavailable": str(exc)}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    password = urlsplit(spec["url"]).password
    for key in ("error", "unavailable"):  # library errors may quote the URL
        if password and isinstance(result.get(key), str):
            result[key] = result[key].replace(password, "***")
    sizes = [len(body) for _, body in messages]
    result.update(
        client=name,
        bodies_sha256=sha,
        body_bytes_min=min(sizes, default=0),
        body_bytes_max=max(sizes, default=0),
    )
    Path(spec["result_path"]).write_text(json.dumps(result))
    return 0


def find_broker_pid(url: str) -> int | None:
    """The local RabbitMQ VM listening on the URL's port, to report broker CPU per message.

    Matched by listening port: other (private, test) nodes may run on the same host.
    """
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = parts.port or 5672
    try:
        import psutil
    except ImportError:
        return None
    for proc in psutil.process_iter(["name"]):
        if not (proc.info.get("name") or "").startswith("beam"):
            continue
        try:
            conns = proc.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            return int(proc.pid)
    return None


class BrokerFixture:
    """Exchange (declared if missing) plus one capped queue bound ``tasks.#``.

    The queue is exclusive to this connection, so the broker drops it even if
    the harness dies; heartbeats are off because the parent sits idle in
    subprocess.run() between calls.
    """

    def __init__(self, url: str, exchange: str) -> None:
        import pika

        params = pika.URLParameters(url)
        params.heartbeat = 0
        self.conn = pika.BlockingConnection(params)
        self.channel = self.conn.channel()
        self.exchange = exchange
        self.queue = f"{exchange}.throughput.{os.getpid()}"
        try:
            self.channel.exchange_declare(exchange, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            self.channel = self.conn.channel()
            self.channel.exchange_declare(
                exchange, exchange_type="topic", durable=False, auto_delete=False
            )
        self.channel.queue_declare(self.queue, exclusive=True, arguments=QUEUE_ARGUMENTS)
        self.channel.queue_bind(self.queue, exchange, routing_key=BINDING_KEY)

    def purge(self) -> None:
        self.channel.queue_purge(self.queue)

    def depth(self) -> int:
        return int(self.channel.queue_declare(self.queue, passive=True).method.message_count)

    def close(self) -> None:
        try:
            self.channel.queue_delete(self.queue)
        finally:
            self.conn.close()


def run_child(name: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one client in a fresh interpreter and collect its result."""
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        result_path = Path(tmp) / "result.json"
        payload = json.dumps({**spec, "client": name, "result_path": str(result_path)})
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
        try:
            proc = subprocess.run(
                cmd, input=payload, text=True, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return {"client": name, "error": f"timed out after {timeout:.0f} s"}
        if proc.stderr.strip():
            print(f"  [{name} stderr]\n    " + "\n    ".join(proc.stderr.strip().splitlines()))
        if not result_path.exists():
            return {"client": name, "error": f"child exited {proc.returncode} without a result"}
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result


def _fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


# --------------------------------------------------------------------------- rounds


def _median(values: Iterable[float | None]) -> float | None:
    """Median of the values present (a round may lack, say, broker CPU)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _succeeded(result: dict[str, Any]) -> bool:
    """The run produced numbers (it may still carry an error note, e.g. a failed flush)."""
    return "confirmed" in result


# Per-round fields folded by median, and counters folded by sum: a drop or nack in any
# round must stay visible, a median would hide it.
MEDIAN_FIELDS = (
    "confirmed",
    "attempted",
    "elapsed_s",
    "msgs_per_s",
    "cpu_us_per_msg",
    "broker_cpu_us_per_msg",
    "latency_p50_ms",
    "latency_p99_ms",
    "reports_per_s",
)
SUM_FIELDS = ("nacked", "dropped", "coalesced", "errors")


def summarize_client(
    name: str, runs: list[dict[str, Any]], *, round_1_only: bool
) -> dict[str, Any]:
    """Fold one client's rounds into one record: medians, the msgs/s spread, summed drops.

    Medians, not means: on this shared 2-core box one round in a few gets hit by a
    neighbour, and a mean would drag every column toward that round.
    """
    ok = [r for r in runs if _succeeded(r)]
    summary: dict[str, Any] = {
        "client": name,
        "rounds": len(runs),
        "ok_rounds": len(ok),
        "round_1_only": round_1_only,
        "unavailable": next((r["unavailable"] for r in runs if "unavailable" in r), None),
        "failures": {},  # error -> rounds it happened in
    }
    for r in runs:
        if not _succeeded(r) and "unavailable" not in r:
            summary["failures"].setdefault(str(r.get("error")), []).append(r["round"])
    if not ok:
        return summary
    rates = [r["msgs_per_s"] for r in ok]
    summary.update({f: _median(r.get(f) for r in ok) for f in MEDIAN_FIELDS})
    summary.update({f: sum(r.get(f) or 0 for r in ok) for f in SUM_FIELDS})
    summary.update(
        msgs_per_s_min=min(rates),
        msgs_per_s_max=max(rates),
        msgs_per_s_rounds=rates,
        planned=ok[0]["planned"],
        capped=any(r.get("capped") for r in ok),
        latency_basis=ok[0].get("latency_basis"),
        error=next((f"round {r['round']}: {r['error']}" for r in ok if r.get("error")), None),
    )
    return summary


def compute_ratios(
    summaries: dict[str, dict[str, Any]], results: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """streamer / baseline: the ratio of the medians, and the same ratio round by round.

    The per-round ratios are the spread a reader should judge the medians by: both
    clients of a round ran minutes apart at most, so they saw much the same machine.
    """
    streamer = summaries.get("streamer")
    if streamer is None or not streamer.get("msgs_per_s"):
        return {}
    by_round = {(r["client"], r["round"]): r for r in results if _succeeded(r)}
    rounds = sorted({r["round"] for r in results if r["client"] == "streamer"})
    ratios: dict[str, dict[str, Any]] = {}
    for base in RATIO_BASELINES:
        other = summaries.get(base)
        if other is None or not other.get("msgs_per_s"):
            continue
        per_round: dict[str, list[float | None]] = {"msgs_per_s": [], "cpu_per_msg": []}
        for n in rounds:
            s, o = by_round.get(("streamer", n), {}), by_round.get((base, n), {})
            per_round["msgs_per_s"].append(_ratio(s.get("msgs_per_s"), o.get("msgs_per_s")))
            per_round["cpu_per_msg"].append(
                _ratio(s.get("cpu_us_per_msg"), o.get("cpu_us_per_msg"))
            )
        ratios[base] = {
            "msgs_per_s": _ratio(streamer["msgs_per_s"], other["msgs_per_s"]),
            "cpu_per_msg": _ratio(streamer["cpu_us_per_msg"], other["cpu_us_per_msg"]),
            "rounds": rounds,
            "msgs_per_s_by_round": per_round["msgs_per_s"],
            "cpu_per_msg_by_round": per_round["cpu_per_msg"],
        }
    return ratios


# --------------------------------------------------------------------------- output


def _notes(s: dict[str, Any]) -> str:
    notes = []
    if s["unavailable"]:
        notes.append(f"unavailable: {s['unavailable']}")
    for error, rounds in s["failures"].items():
        short = error if len(error) <= 80 else error[:77] + "..."  # in full above and in JSON
        notes.append(f"failed in round {', '.join(map(str, rounds))}: {short}")
    if s["round_1_only"]:
        notes.append("round 1 only")
    if s.get("capped"):
        notes.append(f"time-capped: {s['attempted']:,.0f}/{s['planned']:,}")
    if s.get("coalesced"):
        notes.append(f"{s['coalesced']:,} coalesced, {s['reports_per_s']:,.0f} reports/s in")
    if s.get("latency_basis") not in (None, "per-message"):
        notes.append(f"latency {s['latency_basis']}")
    if s.get("errors"):
        notes.append(f"{s['errors']} errors, first {s['error']}")
    elif s.get("error"):
        notes.append(str(s["error"]))
    return "; ".join(notes)


def print_table(summaries: list[dict[str, Any]], *, time_cap: float) -> None:
    """Plain aligned table, one row per client, every column folded over its rounds."""
    header = (
        "client",
        "rounds",
        "confirmed",
        "elapsed s",
        "msgs/s",
        "min-max",
        "CPU us/msg",
        "broker us/msg",
        "p50 ms",
        "p99 ms",
        "nack",
        "drop",
        "notes",
    )
    rows = []
    for s in summaries:
        ran = s["ok_rounds"] if s["ok_rounds"] == s["rounds"] else f"{s['ok_rounds']}/{s['rounds']}"
        if not s["ok_rounds"]:
            rows.append((s["client"], ran, *["-"] * (len(header) - 3), _notes(s)))
            continue
        spread = "-"  # a spread of one round says nothing
        if s["ok_rounds"] > 1:
            spread = f"{s['msgs_per_s_min']:,.0f}-{s['msgs_per_s_max']:,.0f}"
        rows.append(
            (
                s["client"],
                ran,
                _fmt(s["confirmed"]),
                _fmt(s["elapsed_s"], ".2f"),
                _fmt(s["msgs_per_s"]),
                spread,
                _fmt(s["cpu_us_per_msg"], ",.1f"),
                _fmt(s["broker_cpu_us_per_msg"], ",.1f"),
                _fmt(s["latency_p50_ms"], ".2f"),
                _fmt(s["latency_p99_ms"], ".2f"),
                _fmt(s["nacked"]),
                _fmt(s["dropped"]),
                _notes(s),
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for i, line in enumerate([header, *rows]):
        cells = [
            str(c).ljust(w) if j in (0, len(header) - 1) else str(c).rjust(w)
            for j, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "\nmsgs/s is the median over the rounds, min-max its spread; the CPU, broker and"
        "\nlatency columns are medians too; nack and drop are summed over the rounds."
    )
    once = [s["client"] for s in summaries if s["round_1_only"]]
    if once:
        print(
            f"{', '.join(once)}: one message at a time and time-capped at {time_cap:g} s,"
            "\nso they ran in round 1 only (--repeat-all repeats them)."
        )


def print_ratios(summaries: dict[str, dict[str, Any]], ratios: dict[str, dict[str, Any]]) -> None:
    """streamer against the baselines, when both ran."""
    if not summaries.get("streamer", {}).get("ok_rounds"):
        print("\nratios: streamer did not run, nothing to compare")
        return
    if not ratios:
        print(f"\nratios: no baseline ({', '.join(RATIO_BASELINES)}) in this run")
        return
    multi = any(len(r["rounds"]) > 1 for r in ratios.values())
    print(
        "\nratios, streamer / baseline, of the medians"
        + (" (each round's own ratio in brackets):" if multi else ":")
    )
    for base, r in ratios.items():
        speed = f"msgs/s x{_fmt(r['msgs_per_s'], '.2f')}"
        cpu = f"CPU/msg x{_fmt(r['cpu_per_msg'], '.2f')}"
        if multi:
            speed += " [" + " ".join(_fmt(x, ".2f") for x in r["msgs_per_s_by_round"]) + "]"
            cpu += " [" + " ".join(_fmt(x, ".2f") for x in r["cpu_per_msg_by_round"]) + "]"
        print(f"  vs {base:<20} {speed}   {cpu}")


# --------------------------------------------------------------------------- command line


def parse_value(text: str) -> Any:
    """Best guess at a Publisher option's type: 'true' -> True, '1' -> 1, '0.5' -> 0.5."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if any(c.isdigit() for c in text):  # keeps 'inf' or 'nan' as the strings they look like
        for convert in (int, float):
            with contextlib.suppress(ValueError):
                return convert(text)
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=os.environ.get("STREAMER_URL", DEFAULT_URL))
    p.add_argument("--exchange", default="streamer.bench")
    p.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset")
    p.add_argument("--tasks", type=int, default=Workload.tasks)
    p.add_argument("--reports", type=int, default=Workload.reports, help="reports per task")
    p.add_argument("--size", type=int, default=Workload.size, help="body size in bytes")
    p.add_argument("--window", type=int, default=1_000, help="max unconfirmed (pipelined)")
    p.add_argument("--batch", type=int, default=100, help="blaster publishes per write")
    p.add_argument(
        "--time-cap",
        type=float,
        default=30.0,
        help="seconds before one-at-a-time clients (pika, kombu, aio-pika-await) stop; 0=off",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="interleaved rounds over the clients (a, b, c, a, b, c, ...); the table shows medians",
    )
    p.add_argument(
        "--repeat-all",
        action="store_true",
        help="repeat the one-at-a-time clients too (default: they run in round 1 only)",
    )
    p.add_argument(
        "--streamer-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for streamer.Publisher(...), repeatable, e.g. channels=1",
    )
    p.add_argument("--child-timeout", type=float, default=1_800.0)
    p.add_argument(
        "--json", type=Path, default=None, help="default: bench/results/throughput-<time>.json"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.client_list = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in args.client_list if c not in CLIENTS]
    if unknown:
        p.error(f"unknown client(s) {', '.join(unknown)}; choose from {', '.join(CLIENTS)}")
    if min(args.tasks, args.reports, args.window, args.batch, args.repeat) < 1:
        p.error("--tasks, --reports, --window, --batch and --repeat must be >= 1")
    if args.batch > args.window:
        p.error("--batch must not exceed --window")
    args.streamer_options = {}
    for item in args.streamer_option:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            p.error(f"--streamer-option wants KEY=VALUE, got {item!r}")
        if key in ("url", "exchange"):
            p.error(f"--streamer-option {key}: use --{key}, every client shares it")
        args.streamer_options[key] = parse_value(value.strip())
    return args


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for pkg in ("aio-pika", "aiormq", "pamqp", "pika", "kombu", "amqp", "msgspec", "uvloop"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def run_rounds(
    args: argparse.Namespace, spec: dict[str, Any], fixture: BrokerFixture, round_1_only: set[str]
) -> list[dict[str, Any]]:
    """Every selected client once per round, rounds one after the other.

    Interleaved (a, b, c, a, b, c) rather than grouped (a, a, b, b, c, c) so a slow
    drift of the machine (a neighbour, thermal, the broker's own GC) hits every
    client alike instead of whichever one happened to run during it.
    """
    results: list[dict[str, Any]] = []
    unavailable: set[str] = set()  # no point in asking again next round
    for rnd in range(1, args.repeat + 1):
        for name in args.client_list:
            if name in unavailable or (rnd > 1 and name in round_1_only):
                continue
            fixture.purge()
            print(f"- [{rnd}/{args.repeat}] {name} ...", flush=True)
            result = run_child(name, spec, args.child_timeout)
            result["round"] = rnd
            if "unavailable" in result:
                print(f"  {name}: unavailable ({result['unavailable']})")
                unavailable.add(name)
            elif not _succeeded(result):
                print(f"  {name}: failed ({result.get('error')})")
            else:
                result["queue_depth_after"] = fixture.depth()
                print(
                    f"  {result['confirmed']:,} confirmed in {result['elapsed_s']:.2f} s "
                    f"= {result['msgs_per_s']:,.0f} msgs/s"
                )
            results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main()

    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    wall0 = time.perf_counter()
    workload = Workload(tasks=args.tasks, reports=args.reports, size=args.size)
    options = RunOptions(
        window=args.window,
        batch=args.batch,
        time_cap=args.time_cap,
        broker_pid=find_broker_pid(args.url),
        streamer_options=args.streamer_options,
    )
    spec = {
        "url": args.url,
        "exchange": args.exchange,
        "workload": asdict(workload),
        "options": asdict(options),
    }
    round_1_only: set[str] = set()
    if args.repeat > 1 and not args.repeat_all:
        round_1_only = SERIAL_CLIENTS & set(args.client_list)
    streamer_opts = " ".join(f"{k}={v!r}" for k, v in args.streamer_options.items())
    print(
        f"broker {mask_url(args.url)}  exchange {args.exchange!r}  "
        f"{workload.tasks:,} tasks x {workload.reports:,} reports = {workload.total:,} msgs "
        f"of {workload.size} B; window {options.window}, confirms on; "
        f"{args.repeat} round{'s' if args.repeat > 1 else ''}"
        + (f"; streamer {streamer_opts}" if streamer_opts else "")
    )

    try:
        fixture = BrokerFixture(args.url, args.exchange)
    except Exception as exc:
        print(f"cannot set up exchange/queue on {mask_url(args.url)}: {type(exc).__name__}: {exc}")
        return 2
    try:
        results = run_rounds(args, spec, fixture, round_1_only)
    finally:
        fixture.close()

    digests = {r.get("bodies_sha256") for r in results} - {None}
    if len(digests) > 1:
        print("WARNING: clients saw different bodies:", digests)
    summaries = {
        name: summarize_client(
            name,
            [r for r in results if r["client"] == name],
            round_1_only=name in round_1_only,
        )
        for name in args.client_list
    }
    ratios = compute_ratios(summaries, results)
    print()
    print_table(list(summaries.values()), time_cap=args.time_cap)
    print_ratios(summaries, ratios)

    wall = time.perf_counter() - wall0
    json_path = args.json or RESULTS_DIR / f"throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "started_at": started_at,
        "wall_s": wall,
        "url": mask_url(args.url),
        "exchange": args.exchange,
        "workload": asdict(workload),
        "options": asdict(options),
        "repeat": args.repeat,
        "repeat_all": args.repeat_all,
        "host": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "versions": _versions(),
        },
        "results": results,  # every round's raw result, each tagged with its "round"
        "medians": summaries,
        "ratios": ratios,
    }
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON written to {json_path}\nwall time {wall:.1f} s")
    failed = [r["client"] for r in results if not _succeeded(r) and "unavailable" not in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
