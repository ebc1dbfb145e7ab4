"""Foreign input cannot freeze a task: hostile ``seq`` and ``sent_at`` values sent with pika
in the middle of a genuine task, watched by the dashboard and ``watch`` at once.

Before: one report with ``seq`` = 2**63-1 made the board ignore the task's next reports,
``finished`` included, as stale; ``watch`` printed 10**26 gaps and a ``sent_at`` of 1.0 put a
7e9 s observation into the latency histogram.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import msgspec
import pika

from streamer import Publisher, Report
from streamer.watch import watch
from tests.integration.test_dashboard import dashboard, progress
from tests.integration.test_watch import publish_until, recording, settings_for

ITEMS = 20
HOSTILE_SEQS = (2**63 - 1, -1, 1e26)  # not an integer in 0..2**53: malformed (bad_seq)
JUMP = 10**9  # far ahead: a sequence jump, counted; the genuine sequence goes on after it


def send_with_pika(url: str, exchange: str, key: str, bodies: list[dict[str, Any]]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(
                exchange,
                key,
                msgspec.json.encode(body),
                pika.BasicProperties(content_type="application/json"),
            )
    finally:
        conn.close()


async def test_hostile_seq_and_sent_at_leave_the_genuine_task_to_finish(
    broker_url: str, exchange: str, unique: str
) -> None:
    task_id = f"g-{unique[:8]}"  # short enough to show whole in the table
    console, out = recording(terminal=True)
    async with dashboard(broker_url, exchange) as dash:
        watching = asyncio.ensure_future(
            watch(
                settings_for(broker_url, exchange),
                task_id=task_id,
                refresh=0.05,
                console=console,
            )
        )
        async with Publisher(broker_url, exchange) as pub:
            first = Report(task_id=task_id, state="running", progress_report=progress(0, ITEMS))
            await publish_until(
                pub,
                first,
                lambda: dash.board.get(task_id) is not None and task_id in out.getvalue(),
            )
            await pub.flush(5)
            base = {"task_id": task_id, "state": "running"}
            hostile = [{**base, "seq": seq} for seq in HOSTILE_SEQS]
            hostile.append({**base, "seq": JUMP, "progress_report": progress(ITEMS, ITEMS)})
            hostile.append({**base, "sent_at": 1.0})  # no seq: applies; 1970 is clock skew
            await asyncio.to_thread(
                send_with_pika, broker_url, exchange, f"tasks.{task_id}", hostile
            )
            for done in range(1, ITEMS + 1):
                pub.publish(
                    Report(task_id=task_id, state="running", progress_report=progress(done, ITEMS))
                )
            pub.publish(Report(task_id=task_id, state="finished"))
            assert await pub.flush(5)
        async with asyncio.timeout(10):
            assert await watching == 0  # watch saw the genuine `finished`
            while (task := dash.board.get(task_id)) is None or task.state != "finished":
                await asyncio.sleep(0.05)
        board = dash.board
        assert dash.reader.malformed.counts["bad_seq"] == len(HOSTILE_SEQS)
        assert board.jumps == 2  # to 10**9, then back to the genuine sequence
        assert board.stale == 0  # no genuine report was taken for stale
        assert board.gaps < 50  # at most the reports sent before both were consuming
        assert board.clock_skew == 1
        assert board.latency.count > ITEMS and board.latency.max < 60
        async with aiohttp.ClientSession() as http, http.get(f"{dash.url}metrics") as resp:
            metrics = await resp.text()
        assert 'streamer_received_malformed_total{kind="bad_seq"} 3.0' in metrics
        assert "streamer_received_seq_jumps_total 2.0" in metrics
        assert "streamer_received_clock_skew_total 1.0" in metrics
        gauge = re.search(r"^streamer_board_gaps (\S+)$", metrics, re.M)
        assert gauge is not None and float(gauge.group(1)) == board.gaps < 50, metrics

    shown = console.export_text()
    gaps = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) gaps", shown)]
    assert gaps and max(gaps) < 50, gaps
    assert "3 malformed" in shown
