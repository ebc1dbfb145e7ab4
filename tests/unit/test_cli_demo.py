"""``streamer demo`` in process with its output in a pipe (not a terminal), through an
in-memory loopback instead of a broker: the real simulation, view and summary, no network.

What the fake publisher publishes, the fake receiver delivers at once, encoded as on the
wire; so the view folds exactly what a broker would have routed to it.
"""

from __future__ import annotations

import asyncio
import gc
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

import streamer.watch
from streamer import Report, Stats
from streamer.amqp import Delivery
from streamer.cli import main
from streamer.report import encode_stamped
from streamer.settings import Settings

NOWHERE = "amqp://guest:secret@127.0.0.1:1/"
BOUND: list[FakeReceiver] = []  # what a publish reaches
DEMO = sys.modules["streamer.cli.demo"]  # the package's attribute of that name is the command


class FakeReceiver:
    """Bound while it runs; gets every publish of :class:`FakePublisher` as one delivery."""

    def __init__(self, on_batch: Callable[[list[Delivery]], None], **_: Any) -> None:
        self.on_batch = on_batch
        self.consuming = asyncio.Event()
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        BOUND.append(self)
        self.consuming.set()
        await self._stopped.wait()
        BOUND.remove(self)

    def stop(self) -> None:
        self._stopped.set()


class FakePublisher:
    """Stamps and encodes each report as on the wire and delivers it to every bound receiver."""

    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings
        self.seqs: dict[str, int] = {}

    async def __aenter__(self) -> FakePublisher:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def publish(self, report: Report) -> None:
        seq = self.seqs[report.task_id] = self.seqs.get(report.task_id, 0) + 1
        body = encode_stamped(report, seq, time.time(), self.settings.max_body)
        delivery = (0, f"tasks.{report.task_id}", "application/json", body)
        for receiver in BOUND:
            receiver.on_batch([delivery])

    async def throttle(self, max_pending: int) -> None:
        return None

    async def flush(self, timeout: float | None = None) -> bool:
        return True

    @property
    def stats(self) -> Stats:
        n = sum(self.seqs.values())
        return Stats(published=n, confirmed=n, confirm_latency_p50=0.001)


@pytest.fixture
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streamer.watch, "Receiver", FakeReceiver)
    monkeypatch.setattr(DEMO, "Publisher", FakePublisher)
    # The CLI's run() tunes the collector for a whole process; not for this test session's.
    monkeypatch.setattr(gc, "freeze", lambda: None)
    monkeypatch.setattr(gc, "set_threshold", lambda *_: None)


def test_demo_in_a_pipe_is_a_few_readable_lines(loopback: None) -> None:
    started = time.monotonic()
    runner = CliRunner(env={"STREAMER_URL": NOWHERE, "STREAMER_CONFIG": None})
    result = runner.invoke(main, ["demo", "--rate", "1000", "--seed", "1"])
    took = time.monotonic() - started
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stderr == "broker amqp://guest:***@127.0.0.1:1/, exchange 'streamer'\n"
    lines = result.stdout.splitlines()
    assert "tasks." not in result.stdout  # no routing keys
    view = [line for line in lines if re.match(r"\d{4}-\d\d-\d\dT", line)]
    # 1,680 reports at 1,000/s: a line a second of the view, not one per report
    assert 1 <= len(view) <= took + 1, lines
    assert " 4 tasks: 4 finished  │  " in view[-1] and ", 1,680 received  │  " in view[-1]
    summary = lines[len(view) :]
    assert summary[0].startswith("simulated 2 syncs and 2 publishes on amqp://guest:***@")
    assert (
        "  reports    1,680 published: 1,680 confirmed, 0 coalesced, 0 dropped, 0 pending"
        in summary
    )
    assert "  watched    1,680 reports, final state of 4 of 4 tasks, 0 gaps" in summary
    assert summary[-1] == "  OK: every report confirmed or coalesced, none dropped"
    assert len(lines) <= 12


def test_demo_fails_when_final_states_do_not_arrive(
    loopback: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view that receives nothing: the run says so and exits 1 (after a shortened wait)."""
    monkeypatch.setattr(FakePublisher, "publish", lambda self, report: None)
    monkeypatch.setattr(DEMO, "SETTLE", 0.2)
    runner = CliRunner(env={"STREAMER_URL": NOWHERE, "STREAMER_CONFIG": None})
    result = runner.invoke(main, ["demo", "--rate", "0", "--seed", "1"])
    assert result.exit_code == 1, (result.output, result.exception)
    assert "  FAILED: the final state of 0 of 4 tasks arrived" in result.stdout.splitlines()
