#!/usr/bin/env python
"""Where a streamer receiver's CPU goes: each stage of the receive path timed per report,
on real broker bytes but with no broker (and no other process) in the timed part.

bench/receive.py gives a receiver's whole CPU per report; this splits it. The reports are
published with ``streamer.Publisher`` into a queue and read once through streamer.amqp, with
every ``data_received`` chunk recorded (real deliveries, real chunk sizes). The timed part then
replays them in this process: the frame parser, then each tool's fold on the same batches.
Every stage runs ``--passes`` times on fresh state; the median is shown. What a process
measures beyond the sum of its stages is the event loop and the kernel (socket reads), which
the raw reader's row in bench/receive.py holds.

    .venv/bin/python bench/receivers/stages.py --reports 100000
    .venv/bin/python bench/receivers/stages.py --profile dashboard   # cProfile of one fold
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

for _path in (Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2]):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from receivers.broker import Admin  # noqa: E402
from receivers.feeder import build, publish_all  # noqa: E402
from streamer.amqp import Connection, ConnectionCallbacks, Delivery, open_connection  # noqa: E402
from streamer.settings import Settings  # noqa: E402

Batch = list[Delivery]


def capture(url: str, tasks: int, count: int) -> list[bytes]:
    """Publish ``count`` reports into a queue, read them once; every chunk the socket gave."""
    import uvloop

    admin = Admin(url)
    exchange, queue = f"bench.stages.{os.getpid()}", f"bench.stages.{os.getpid()}.q"
    admin.declare_exchange(exchange)
    admin.channel.queue_declare(queue, durable=True, arguments={"x-max-length": count + 10})
    admin.channel.queue_bind(queue, exchange, routing_key="tasks.#")
    try:
        uvloop.run(publish_all(url, exchange, build(tasks, count), 1_000))
        return uvloop.run(_read(url, queue, count))
    finally:
        admin.channel.queue_delete(queue)
        admin.delete_exchange(exchange)
        admin.close()


async def _read(url: str, queue: str, count: int) -> list[bytes]:
    chunks: list[bytes] = []
    done = asyncio.Event()
    got = [0]

    class Counter(ConnectionCallbacks):
        def on_deliveries(self, channel: int, deliveries: Batch) -> None:
            got[0] += len(deliveries)
            if got[0] >= count:
                done.set()

    original = Connection.data_received

    def recording(self: Connection, data: bytes) -> None:
        if recording.on:  # type: ignore[attr-defined]
            chunks.append(bytes(data))
        original(self, data)

    async def setup(conn: Connection) -> None:
        await conn.open_channel(1)
        recording.on = True  # type: ignore[attr-defined]
        await conn.consume(1, queue, prefetch=1_000, no_ack=True)

    recording.on = False  # type: ignore[attr-defined]
    Connection.data_received = recording  # type: ignore[method-assign]
    try:
        conn = await open_connection(
            url, Settings(url=url), name="bench stages", callbacks=Counter(), setup=setup
        )
        await asyncio.wait_for(done.wait(), 300)
        await conn.close()
    finally:
        Connection.data_received = original  # type: ignore[method-assign]
    return chunks


def replay(chunks: list[bytes]) -> tuple[float, list[Batch]]:
    """The frame parser over the recorded chunks: (seconds, the batches it handed over)."""
    from streamer.amqp.connection import _Incoming

    batches: list[Batch] = []

    class Keep(ConnectionCallbacks):
        def on_deliveries(self, channel: int, deliveries: Batch) -> None:
            batches.append(deliveries)

    async def run() -> float:
        conn = Connection("amqp://replay/", "replay", 0, Keep())
        try:  # channel 1 is consuming, as after consume() (the private class has changed)
            incoming = _Incoming(1)  # type: ignore[call-arg]
        except TypeError:
            incoming = _Incoming()  # type: ignore[call-arg]
        conn._incoming[1] = incoming
        feed = conn.data_received
        t0 = time.perf_counter()
        for chunk in chunks:
            feed(chunk)
        return time.perf_counter() - t0

    return asyncio.run(run()), batches


# --------------------------------------------------------------------------- the folds


def stages(url: str) -> dict[str, Callable[[], Callable[[Batch], Any]]]:
    """Stage name -> a factory of a fresh per-batch function (fresh board, reader, ...)."""
    import msgspec

    from streamer.board import Board
    from streamer.dashboard.app import Dashboard
    from streamer.receiver import ReportReader
    from streamer.watch import _Watcher

    settings = Settings(url=url, exchange="bench.stages")
    encode_json = msgspec.json.Encoder().encode

    def reader() -> Callable[[Batch], Any]:
        return ReportReader(settings.max_body)

    def board() -> Callable[[Batch], Any]:
        read, apply = ReportReader(settings.max_body), Board().apply

        def fold(batch: Batch) -> None:
            now = time.time()
            for _, _, report in read(batch):
                apply(report, now)

        return fold

    def dashboard() -> Callable[[Batch], Any]:
        return Dashboard(settings, port=0)._on_batch

    def watch() -> Callable[[Batch], Any]:
        return _Watcher(None, settings=settings).on_batch

    def listen() -> Callable[[Batch], Any]:  # streamer.cli.listen's show(), --json mode
        read = ReportReader(settings.max_body)
        out = open(os.devnull, "wb")  # noqa: SIM115 (lives as long as the stage)

        def show(batch: Batch) -> None:
            reports = read(batch)
            lines = [encode_json({"routing_key": key, "report": r}) for key, _, r in reports]
            out.write(b"\n".join(lines) + b"\n")
            out.flush()

        return show

    def watcher() -> Callable[[Batch], Any]:
        from loadtest.watcher import Watcher

        return Watcher(url, "bench.stages")._on_batch

    return {
        "ReportReader (classify + msgspec decode)": reader,
        "ReportReader + Board.apply": board,
        "dashboard Dashboard._on_batch": dashboard,
        "watch _Watcher.on_batch": watch,
        "listen --json show()": listen,
        "harness Watcher._on_batch": watcher,
    }


def time_stage(make: Callable[[], Callable[[Batch], Any]], batches: list[Batch]) -> float:
    async def run() -> float:  # some folds want a running loop (asyncio objects)
        fold = make()
        t0 = time.perf_counter()
        for batch in batches:
            fold(batch)
        return time.perf_counter() - t0

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=os.environ.get("STREAMER_URL", Settings().urls[0]))
    p.add_argument("--reports", type=int, default=100_000)
    p.add_argument("--tasks", type=int, default=1_000)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--profile", choices=("dashboard", "watch", "listen"), default=None)
    args = p.parse_args(argv)

    chunks = capture(args.url, args.tasks, args.reports)
    # As the commands run (streamer.cli._common.run): what is loaded stays out of every
    # collection, and the young generation is collected every 50,000 allocations.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    _, batches = replay(chunks)
    n = sum(len(b) for b in batches)
    sizes = sorted(len(b) for b in batches)
    print(
        f"{n:,} deliveries in {len(chunks):,} socket reads, {len(batches):,} batches "
        f"(median {sizes[len(sizes) // 2]} per batch); median of {args.passes} passes\n"
    )
    rows = [("frames: Connection.data_received", [replay(chunks)[0] for _ in range(args.passes)])]
    for name, make in stages(args.url).items():
        rows.append((name, [time_stage(make, batches) for _ in range(args.passes)]))
    width = max(len(name) for name, _ in rows)
    print(f"{'stage':<{width}}  us/report  min-max")
    for name, times in rows:
        per = [t / n * 1e6 for t in times]
        print(f"{name:<{width}}  {statistics.median(per):9.2f}  {min(per):.2f}-{max(per):.2f}")

    if args.profile:
        key = {"dashboard": 2, "watch": 3, "listen": 4}[args.profile]
        make = list(stages(args.url).values())[key]
        profiler = cProfile.Profile()

        async def run() -> None:
            fold = make()
            profiler.enable()
            for batch in batches:
                fold(batch)
            profiler.disable()

        asyncio.run(run())
        print(f"\ncProfile of the {args.profile} fold (tottime per report, cProfile-inflated):")
        stats = pstats.Stats(profiler)
        entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
        for (file, line, func), (_, calls, tottime, cumtime, _) in entries[:15]:
            where = f"{Path(file).name}:{line}({func})" if line else func
            print(
                f"  {tottime / n * 1e6:7.2f} us  cum {cumtime / n * 1e6:7.2f} us  "
                f"{calls / n:5.2f} calls/report  {where}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
