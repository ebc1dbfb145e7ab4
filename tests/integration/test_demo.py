"""``streamer demo`` as ``make demo`` runs it, against the real broker, output in a pipe."""

from __future__ import annotations

import re

from tests.helpers import run_streamer_async


async def test_demo_in_a_pipe_shows_the_view_then_the_summary(
    broker_url: str, exchange: str
) -> None:
    code, out, err = await run_streamer_async(
        "demo", "--url", broker_url, "-e", exchange, "--rate", "1000", "--seed", "7"
    )
    assert code == 0, out + err
    assert err.startswith("broker amqp://") and err.count("\n") == 1, err
    lines = out.splitlines()
    assert "tasks." not in out  # the routing keys are `streamer listen -q`'s
    view = [line for line in lines if re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert 1 <= len(view) <= 5, lines  # ~2 s: a line a second
    assert "4 tasks: 4 finished" in view[-1] and "1,680 received" in view[-1], view[-1]
    summary = lines[len(view) :]
    assert "  reports    1,680 published: 1,680 confirmed, 0 coalesced, 0 dropped, 0 pending" in (
        summary
    )
    assert "  watched    1,680 reports, final state of 4 of 4 tasks, 0 gaps" in summary
    assert summary[-1] == "  OK: every report confirmed or coalesced, none dropped"
