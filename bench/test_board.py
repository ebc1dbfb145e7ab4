"""Micro benchmark: how many reports per second the task board folds (watch, dashboard)."""

from __future__ import annotations

import msgspec
from pytest_benchmark.fixture import BenchmarkFixture

from streamer import Report, decode, encode
from streamer.board import Board

TASKS, PER_TASK = 100, 100


def _reports() -> list[Report]:
    out = []
    for n in range(1, PER_TASK + 1):
        for t in range(TASKS):
            progress = {
                "content": {
                    "items_done": n,
                    "items_total": PER_TASK,
                    "size_done": n,
                    "size_total": PER_TASK,
                },
                "metadata": {"state": "FINISHED"},
            }
            state = "finished" if n == PER_TASK else "running"
            out.append(Report(task_id=f"t{t}", state=state, seq=n, progress_report=progress))
    return out


REPORTS = _reports()
BODIES = [encode(r) for r in REPORTS]
# The same, in families and groups: every tenth task spawned the nine after it, and every
# task belongs to one of ten groups (what the family tracking costs per report).
FAMILY_REPORTS = [
    msgspec.structs.replace(
        r,
        group_id=f"repo-{int(r.task_id[1:]) % 10}",
        spawned_tasks=(
            [f"t{int(r.task_id[1:]) + k}" for k in range(1, 10)]
            if int(r.task_id[1:]) % 10 == 0
            else []
        ),
    )
    for r in REPORTS
]


def fold(reports: list[Report]) -> Board:
    board = Board()
    for r in reports:
        board.apply(r, 0.0)
    return board


def test_fold_reports(benchmark: BenchmarkFixture) -> None:
    """Fold 10,000 decoded reports (100 tasks x 100) into a fresh board."""
    board = benchmark(fold, REPORTS)
    assert board.reports == TASKS * PER_TASK
    assert board.by_state() == {"finished": TASKS}


def test_decode_and_fold(benchmark: BenchmarkFixture) -> None:
    """The consumer's whole per-message work on the board: decode the body, then fold it."""

    def fold() -> Board:
        board = Board()
        for body in BODIES:
            board.apply(decode(body), 0.0)
        return board

    assert benchmark(fold).reports == TASKS * PER_TASK


def test_fold_reports_in_families(benchmark: BenchmarkFixture) -> None:
    """The same 10,000 reports with parents, children and groups: what keeping the links up
    costs per report (the roll-ups, read when a view draws, are checked, not timed)."""
    board = benchmark(fold, FAMILY_REPORTS)
    assert board.reports == TASKS * PER_TASK
    parent = board.get("t0")
    assert parent is not None
    family = board.family(parent, now=0.0)
    assert family is not None and family.members == 10 and family.progress == 1.0
    assert len(board.groups(now=0.0)) == 10
