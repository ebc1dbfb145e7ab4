"""Micro benchmark: how many reports per second the task board folds (watch, dashboard)."""

from __future__ import annotations

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


def test_fold_reports(benchmark: BenchmarkFixture) -> None:
    """Fold 10,000 decoded reports (100 tasks x 100) into a fresh board."""

    def fold() -> Board:
        board = Board()
        for r in REPORTS:
            board.apply(r, 0.0)
        return board

    board = benchmark(fold)
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
