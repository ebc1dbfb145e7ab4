"""The watch view renders a board as text, and counts malformed bodies (no network)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from streamer import Report, TaskError, encode
from streamer.amqp import Phase, Status
from streamer.board import Board
from streamer.settings import Settings
from streamer.view import Counters
from streamer.watch import EXIT_CODES, _Watcher, render


def progress(done: int, total: int) -> dict[str, Any]:
    return {"content": {"items_done": done, "items_total": total}}


def text(board: Board, *, max_rows: int = 30, counters: Counters | None = None) -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(render(board, counters=counters or Counters(), now=1_000.0, max_rows=max_rows))
    return console.export_text()


def line_of(output: str, task_id: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(task_id))


def test_half_done_task_shows_half_bar_percent_items_rate_and_eta() -> None:
    board = Board()
    board.apply(Report(task_id="t1", state="running", progress_report=progress(0, 400), seq=1), 900)
    board.apply(
        Report(
            task_id="t1",
            state="running",
            task_type="sync",
            progress_report=progress(200, 400),
            worker_name="w@h:1",
            seq=2,
        ),
        940,  # 200 items in 40 s: 5/s, 200 left: 40 s
    )
    row = line_of(text(board), "t1")
    assert "██████░░░░░░  50%" in row
    assert "200/400" in row and "5.0/s" in row and "40s" in row
    assert "1m40s" in row  # elapsed since first seen (900 → now 1000)
    assert "running" in row and "sync" in row and "w@h:1" in row


def test_finished_and_error_states() -> None:
    board = Board()
    board.apply(
        Report(
            task_id="done",
            state="finished",
            progress_report=progress(10, 10),
            start_time=datetime(1970, 1, 1, 0, 10, tzinfo=UTC),  # 600
            finish_time=datetime(1970, 1, 1, 0, 12, 5, tzinfo=UTC),  # 725
            seq=1,
        ),
        800,
    )
    board.apply(
        Report(
            task_id="bad",
            state="error",
            progress_report=progress(3, 10),
            error=TaskError(code="PLP0001"),
            seq=1,
        ),
        801,
    )
    out = text(board)
    done = line_of(out, "done")
    assert "finished" in done and "████████████ 100%" in done and "10/10" in done
    assert "2m05s" in done  # finish_time - start_time, not the wall clock
    bad = line_of(out, "bad")
    assert "error" in bad and " 30%" in bad
    header = out.splitlines()[0]
    assert "2 tasks: 1 error, 1 finished" in header


def test_markup_in_task_values_is_printed_literally() -> None:
    board = Board()
    board.apply(
        Report(
            task_id="[bold]x",
            state="running",
            task_type="[red]t[/red]",
            tags=["[bold]x[/bold]", "[i]y"],
            seq=1,
            worker_name="[blink]w",
        )
    )
    out = text(board)
    assert "[bold]x" in out
    assert "[bold]x[/bold], [i]y" in out
    assert out.count("[bold]x") == 2  # the id and the tag
    assert "[red]t[/red]" in out and "[blink]w" in out


def test_active_first_most_recent_first_then_finished_and_row_cap() -> None:
    board = Board()
    board.apply(Report(task_id="fin-old", state="finished", seq=1), 991)
    board.apply(Report(task_id="act-old", state="running", seq=1), 992)
    board.apply(Report(task_id="fin-new", state="finished", seq=1), 993)
    board.apply(Report(task_id="act-new", state="running", seq=1), 994)
    rows = [line.split()[0] for line in text(board).splitlines()[2:]]
    assert rows == ["act-new", "act-old", "fin-new", "fin-old"]

    capped = text(board, max_rows=3).splitlines()
    assert [line.split()[0] for line in capped[2:5]] == ["act-new", "act-old", "fin-new"]
    assert "0 more active, 1 more finished" in capped[5]


def test_header_counts_rate_malformed_and_gaps() -> None:
    board = Board()
    board.apply(Report(task_id="t", state="running", seq=5))  # joined late: 4 gaps
    out = text(board, counters=Counters(received=12_345, malformed=3, rate=5_234.4))
    header = out.splitlines()[0]
    assert "1 task: 1 running" in header
    assert "5,234 reports/s, 12,345 received" in header
    assert "3 malformed, 4 gaps" in header


def test_long_ids_and_unknown_progress() -> None:
    board = Board()
    board.apply(Report(task_id="8f3c2a1e-5b7d-4c1a-9e2f-0d6b8a7c5e41", state="waiting"))
    row = line_of(text(board), "8f3c2a1e-5b")
    assert "8f3c2a1e-5b…" in row and "?" in row


def test_malformed_bodies_are_counted_and_skipped() -> None:
    watcher = _Watcher(None, settings=Settings())
    good = encode(Report(task_id="t", state="running", seq=1))
    for body in (
        b"not json",
        b"\xff\xfe",
        b'{"task_id": "a\xff", "state": "running"}',  # invalid UTF-8 inside a string
        b'{"task_id": 1}',
        b'{"task_id": "x", "state": "bogus"}',
        b"[]",
        good,
    ):
        watcher.fold([(1, "tasks.t", "", body)], 1.0)
    assert (watcher.counters.received, watcher.counters.malformed) == (7, 6)
    assert [t.task_id for t in watcher.board] == ["t"]


def test_followed_task_ends_and_state_changes_are_reported_once() -> None:
    changes: list[str] = []
    watcher = _Watcher("t", lambda task, now: changes.append(task.state), settings=Settings())
    for seq, state in enumerate(["running", "running", "finished"], 1):
        body = encode(Report(task_id="t", state=state, seq=seq))  # type: ignore[arg-type]
        watcher.fold([(seq, "tasks.t", "application/json", body)], float(seq))
    other = encode(Report(task_id="other", state="error", seq=1))
    watcher.fold([(4, "tasks.other", "application/json", other)], 5.0)
    assert changes == ["running", "finished"]
    assert watcher.ended.is_set()


def test_exit_codes() -> None:
    assert EXIT_CODES == {"finished": 0, "error": 10, "canceled": 11, "skipped": 12}


def test_counters_rate_over_the_last_second() -> None:
    counters = Counters()
    counters.sample(10.0)
    counters.received = 500
    counters.sample(10.5)
    assert counters.rate == 1_000.0


def test_dotted_task_types_keep_their_last_words() -> None:
    board = Board()
    board.apply(
        Report(task_id="t1", state="running", task_type="pulp.server.managers.repo.sync.sync")
    )
    assert "repo.sync.sync" in line_of(text(board), "t1")


def test_failed_and_stalled_tasks_stay_on_screen_beyond_the_row_limit() -> None:
    """Rendered at t=1000: errors and tasks silent for over 30 s come first, with the error
    text or how long they have been silent, however many other tasks there are."""
    board = Board(stall_after=30.0)
    failure = TaskError(code="PLP0000", description="Invalid cross-device link")
    board.apply(Report(task_id="failed", state="error", seq=1, error=failure), 100)
    board.apply(Report(task_id="stuck", state="running", seq=1), 900)  # silent 100 s
    for n in range(40):
        board.apply(Report(task_id=f"busy{n:02}", state="running", seq=1), 990 + n / 100)
    lines = text(board, max_rows=10).splitlines()
    rows = [line.split()[0] for line in lines[2:] if not line.startswith("…")]
    assert rows[:2] == ["stuck", "failed"]  # most recent first
    assert len(rows) == 12  # the 2 alerts, then the 10 rows of the limit
    assert "stalled" in line_of("\n".join(lines), "stuck")
    assert "silent 1m40s" in line_of("\n".join(lines), "stuck")
    assert "PLP0000: Invalid cross-device link" in line_of("\n".join(lines), "failed")
    assert "30 more active" in lines[-1]


def test_worker_names_show_what_tells_them_apart() -> None:
    board = Board()
    for n in (1, 2):
        worker = f"reserved_resource_worker-{n}@pulp.example.net"
        board.apply(Report(task_id=f"t{n}", state="running", seq=1, worker_name=worker), 999)
    out = text(board)
    assert "…1@pulp" in line_of(out, "t1") and "…2@pulp" in line_of(out, "t2")
    assert "reserved_resource" not in out


def test_children_are_indented_under_their_parent() -> None:
    board = Board()
    board.apply(Report(task_id="kid-b", state="running", seq=1), 995)  # seen before its parent
    board.apply(Report(task_id="other", state="running", seq=1), 996)
    board.apply(
        Report(task_id="parent", state="running", seq=1, spawned_tasks=["kid-a", "kid-b"]), 997
    )
    board.apply(Report(task_id="kid-a", state="running", seq=1), 998)
    rows = [line.split("  ")[0] for line in text(board).splitlines()[2:]]
    assert rows[rows.index("parent") + 1 : rows.index("parent") + 3] == ["└ kid-a", "└ kid-b"]
    assert "other" in rows


def test_the_connection_state_leads_the_header_until_connected() -> None:
    board = Board()
    board.apply(Report(task_id="t1", state="running", progress_report=progress(1, 4), seq=1), 990)
    status = Status("watch")
    status.trying("amqp://guest:s3cret@127.0.0.1:5672/")
    status.error = ConnectionRefusedError(111, "Connection refused")
    status.attempts, status.retry_at = 4, 1_000.8
    status.move(Phase.UNREACHABLE, 995.0)

    def shown() -> list[str]:
        console = Console(record=True, width=200, file=io.StringIO())
        view = render(board, counters=Counters(), now=1_000.0, max_rows=30, status=status)
        console.print(view)
        return console.export_text().splitlines()

    lines = shown()
    assert lines[0].startswith(
        "connecting to amqp://guest:***@127.0.0.1:5672/ — attempt 4, connection refused, "
        "next in 0.8 s  │  1 task: 1 running"
    )
    assert lines[1].split()[:3] == ["task", "type", "state"] and lines[2].startswith("t1")
    status.move(Phase.CONNECTED, 1_000.0)
    assert shown()[0].startswith("1 task: 1 running")
