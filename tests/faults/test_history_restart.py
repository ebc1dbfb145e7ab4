"""The broker restarts while a view replays the exchange's history: the view resumes where
it was, at the message after the last one it had shown, so nothing is shown twice and
nothing is missing (a private node, restarted in the middle of the replay)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter

from streamer import Publisher
from streamer.amqp import Delivery
from streamer.dashboard import Dashboard
from streamer.history import enable
from streamer.settings import Settings
from tests.broker import PrivateNode
from tests.faults.conftest import record
from tests.helpers import send_reports, start_streamer

TASKS = 50
REPORTS = 800  # per task: 40,000 in the history


async def fill(settings: Settings, tasks: list[str]) -> None:
    await enable(settings, 3600, 10**9)
    async with Publisher(settings=settings) as pub:
        await send_reports(pub, tasks, range(1, REPORTS + 1), "finished")
        assert pub.stats.coalesced == 0 and pub.stats.dropped == 0


async def test_listen_resumes_the_replay_after_a_restart(node: PrivateNode, unique: str) -> None:
    settings = Settings(url=node.url, exchange=f"streamer.faults.history.{unique}")
    tasks = [f"replayed-{unique}-{n}" for n in range(TASKS)]
    await fill(settings, tasks)
    # listen writes to a pipe nobody reads yet: it blocks on it in the middle of the replay,
    # and the node restarts under it.
    proc = start_streamer(
        "listen", "--url", node.url, "-e", settings.exchange, "--since", "first", "--json",
        "--count", str(TASKS * REPORTS), "--timeout", "60",
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["report"]["seq"] == 1
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.to_thread(node.restart)
        restarted = time.monotonic() - started
        assert proc.stderr is not None  # (read through the same buffers as the first line)
        out, err = await asyncio.gather(
            asyncio.to_thread(proc.stdout.read), asyncio.to_thread(proc.stderr.read)
        )
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert proc.returncode == 0, err
    lines = [first, *map(json.loads, out.splitlines())]
    seen = Counter((line["report"]["task_id"], line["report"]["seq"]) for line in lines)
    twice = [key for key, n in seen.items() if n > 1]
    assert not twice, f"{len(twice)} reports shown twice after the restart, e.g. {twice[:3]}"
    expected = {(task, seq) for task in tasks for seq in range(1, REPORTS + 1)}
    missing = expected - set(seen)
    assert not missing, f"{len(missing)} reports missing, e.g. {sorted(missing)[:3]}"
    # The restart came in the middle of the replay (listen was blocked on the pipe, a few
    # hundred lines in): it lost its connection before it had caught up.
    assert "lost connection" in err and "caught up" in err, err
    assert err.index("lost connection") < err.index("caught up"), err
    record("history_restart_listen", reports=len(lines), restart_seconds=round(restarted, 1))


async def test_dashboard_resumes_the_replay_after_a_restart(node: PrivateNode, unique: str) -> None:
    settings = Settings(url=node.url, exchange=f"streamer.faults.history.{unique}")
    tasks = [f"board-{unique}-{n}" for n in range(TASKS)]
    await fill(settings, tasks)
    async with Dashboard(settings, port=0) as dash:
        fold = dash.receiver.on_batch
        stopped = threading.Event()

        def held(deliveries: list[Delivery]) -> None:
            # The first batch starts the restart and holds the reader until the node is down:
            # the restart comes in the middle of the replay, whatever the machine's speed.
            fold(deliveries)
            if restarting.ident is None:
                restarting.start()
            stopped.wait(60)

        def restart() -> None:
            node.stop()
            stopped.set()
            node.start()

        restarting = threading.Thread(target=restart)
        dash.receiver.on_batch = held
        async with asyncio.timeout(60):
            while dash.consuming.is_set() or not stopped.is_set():
                await asyncio.sleep(0.001)
        at_loss = dash.board.reports
        await asyncio.to_thread(restarting.join)
        async with asyncio.timeout(60):
            while dash.board.by_state().get("finished", 0) < TASKS:
                await asyncio.sleep(0.05)
        board = dash.board
        assert dash.receiver.reconnects >= 1
        assert 0 < at_loss < TASKS * REPORTS, "the replay had ended before the restart"
        assert board.duplicates == 0 and board.stale == 0, "reports folded twice"
        assert board.gaps == 0, "reports missed"
        assert board.reports == TASKS * REPORTS
        summary = dash.summary()
        assert summary.replaying is None
    record("history_restart_dashboard", folded_before_restart=at_loss)
