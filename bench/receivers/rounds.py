"""One run of one receiver in each mode of bench/receive.py, as a record of plain numbers.

attached: a fresh exchange; the receiver is started and proven bound (the probe); its CPU
time is sampled; the feeder publishes the workload at full speed; once the receiver has
everything (or nothing more arrived for a second) its CPU is sampled again and it is stopped.
Received counts the probe out. CPU per report is over what it received.

drain: a fresh durable queue gets the sentinel, the gate, then the whole drain workload; the
receiver is started and waits behind the gate (its consumer registered, everything else done);
its CPU is sampled and the gate opened (t0); it is done when it has every report. The rate is
reports / (time of its last batch - t0): the children note the time of their last batch, the
dashboard's board has each task's ``seen`` time, the newest of which is its last batch.
"""

from __future__ import annotations

import os
import resource
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import source
from .broker import Admin, drain_arguments
from .feeder import Feeder
from .launch import Dashboard, Running, cleanup, launch, settle

QUIET = 1.0  # seconds without a new report after which a receiver is taken to be done


@dataclass
class Context:
    url: str
    prefix: str  # exchange and queue names start with it (pid: runs never collide)
    prefetch: int
    admin: Admin
    feeder: Feeder
    broker_pid: int | None = None
    root: Path = Path(__file__).resolve().parents[2]  # where the children import streamer from


class Load:
    """How busy the machine was over a measured window, and how much of that was not ours.

    Other sessions share this 2-core machine (test suites with private brokers, say), so each
    run records the CPU seconds spent by everything except the receiver, the publisher, the
    broker and this parent: ``foreign_cores`` is that over the window's length (2.0 would be
    both cores taken). A run with a high value is a noisy one; the medians are there for that.
    """

    def __init__(self, broker_pid: int | None) -> None:
        import psutil

        self._psutil = psutil
        self._broker = psutil.Process(broker_pid) if broker_pid else None
        self._t0 = time.monotonic()
        self._busy0, self._broker0, self._self0 = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        t = self._psutil.cpu_times()
        # guest time is already in user; steal and iowait are not this machine working.
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        broker = 0.0
        if self._broker is not None:
            try:
                b = self._broker.cpu_times()
                broker = b.user + b.system
            except self._psutil.Error:
                self._broker = None
        r = resource.getrusage(resource.RUSAGE_SELF)
        return busy, broker, r.ru_utime + r.ru_stime

    def stop(self, ours: float) -> dict[str, Any]:
        """``ours``: CPU seconds of the receiver and publisher over the window."""
        window = time.monotonic() - self._t0
        busy, broker, me = self._sample()
        broker_s = broker - self._broker0 if self._broker is not None else None
        foreign = (busy - self._busy0) - (broker_s or 0.0) - (me - self._self0) - ours
        return {
            "window_s": window,
            "busy_cores": (busy - self._busy0) / window if window > 0 else None,
            "broker_cpu_s": broker_s,
            "foreign_cores": max(foreign, 0.0) / window if window > 0 else None,
            "loadavg_1m": os.getloadavg()[0],
        }


def _split(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    """User and system CPU seconds between two samples (the kernel's share is the sockets)."""
    return after[0] - before[0], after[1] - before[1]


def _fail(result: dict[str, Any], rec: Running | None, exc: BaseException) -> None:
    result["error"] = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, TimeoutError | RuntimeError):
        result["traceback"] = traceback.format_exc()
    if rec is not None:
        result["stderr_tail"] = rec.stderr_tail()


def attached(ctx: Context, name: str, rnd: int) -> dict[str, Any]:
    """The receiver attached while one publisher runs at full speed."""
    exchange = f"{ctx.prefix}.attached.{rnd}.{name}"
    result: dict[str, Any] = {"mode": "attached", "receiver": name, "round": rnd}
    result.update(started=time.time(), code=source.digest(ctx.root))
    ctx.admin.declare_exchange(exchange)
    rec: Running | None = None
    try:
        spec = {"url": ctx.url, "exchange": exchange, "prefetch": ctx.prefetch}
        rec = launch(name, spec)
        result["probe_s"] = ctx.admin.probe(exchange, rec.alive)
        deadline = time.monotonic() + 15
        while rec.count()[0] < 1:  # the probe is in: the receiver is idle from here on
            if time.monotonic() > deadline or not rec.alive():
                raise TimeoutError("the receiver never got the probe")
            time.sleep(0.05)
        cpu0, split0 = rec.cpu(), rec.last_split
        load = Load(ctx.broker_pid)
        pub = ctx.feeder.publish(exchange, "attached")
        if not pub.get("confirmed"):
            raise RuntimeError(f"the publisher failed: {pub.get('error')}")
        expected = pub["confirmed"] + 1
        _, cpu1 = settle(rec, expected, QUIET, timeout=60 + expected / 2_000)
        result["load"] = load.stop(cpu1 - cpu0 + (pub.get("cpu_s") or 0.0))
        result["cpu_user_s"], result["cpu_sys_s"] = _split(split0, rec.last_split)
        final = rec.final()
        received = final.pop("received") - 1
        cpu = cpu1 - cpu0
        result.update(
            published=pub["confirmed"],
            received=received,
            received_ratio=received / pub["confirmed"],
            gaps=final.pop("gaps"),
            cpu_s=cpu,
            cpu_us_per_report=cpu / received * 1e6 if received > 0 else None,
            publisher_rate=pub["rate"],
            publisher=pub,
            exit_code=rec.returncode,
            **{k: v for k, v in final.items() if k != "t_last"},
        )
        if result.get("child_error"):
            result["error"] = f"the receiver failed: {result['child_error']}"
        if pub.get("coalesced") or pub.get("dropped"):
            result["note"] = f"publisher coalesced {pub['coalesced']}, dropped {pub['dropped']}"
    except Exception as exc:
        _fail(result, rec, exc)
    finally:
        if rec is not None:
            cleanup(rec)
        ctx.admin.delete_exchange(exchange)
    return result


def drain(ctx: Context, name: str, rnd: int, count: int, exchange: str) -> dict[str, Any]:
    """The receiver reading ``count`` reports that wait in a queue."""
    queue = f"{ctx.prefix}.drain.{rnd}.{name}"
    result: dict[str, Any] = {"mode": "drain", "receiver": name, "round": rnd}
    result.update(started=time.time(), code=source.digest(ctx.root))
    admin = ctx.admin
    rec: Running | None = None
    try:
        admin.declare_drain_queue(queue, exchange, count)
        fill = ctx.feeder.publish(exchange, "drain")
        expected, _ = admin.queue_state(queue)
        result.update(filled=expected, fill_rate=fill.get("rate"))
        if expected < count:
            result["note"] = f"only {expected:,} of {count:,} in the queue ({fill})"
        spec = {
            "url": ctx.url,
            "exchange": exchange,
            "queue": queue,
            "queue_args": drain_arguments(count),
            "expected": expected,
            "prefetch": ctx.prefetch,
        }
        rec = launch(name, spec)
        admin.wait_consumers(queue, 2, rec.alive)  # the gate and the receiver, waiting
        time.sleep(0.3)  # anything left of its start-up settles before the clock starts
        cpu0, split0 = rec.cpu(), rec.last_split
        load = Load(ctx.broker_pid)
        t0 = admin.open_gate()
        timeout = 60 + expected / 2_000
        if isinstance(rec, Dashboard):  # ask it nothing while it drains: watch the queue
            deadline = time.monotonic() + timeout
            while admin.queue_state(queue)[0] and time.monotonic() < deadline and rec.alive():
                time.sleep(0.05)
        _, cpu1 = settle(rec, expected, QUIET * 2, timeout)
        result["load"] = load.stop(cpu1 - cpu0)
        result["cpu_user_s"], result["cpu_sys_s"] = _split(split0, rec.last_split)
        final = rec.final()
        received, t_last = final.pop("received"), final.pop("t_last", None)
        if t_last is None:
            raise RuntimeError(f"it never completed: {received:,} of {expected:,}")
        elapsed = t_last - t0
        cpu = cpu1 - cpu0
        result.update(
            received=received,
            received_ratio=received / expected if expected else None,
            gaps=final.pop("gaps"),
            elapsed_s=elapsed,
            rate=received / elapsed if elapsed > 0 else None,
            cpu_s=cpu,
            cpu_us_per_report=cpu / received * 1e6 if received else None,
            exit_code=rec.returncode,
            **final,
        )
        if result.get("child_error"):
            result["error"] = f"the receiver failed: {result['child_error']}"
        elif received < expected:
            result["note"] = f"received {received:,} of {expected:,}"
    except Exception as exc:
        _fail(result, rec, exc)
    finally:
        if rec is not None:
            cleanup(rec)
        try:
            admin.delete_queue(queue)
        except Exception as exc:  # keep the run going; say so
            result.setdefault("cleanup_error", repr(exc))
    return result
