"""The task board folds reports into per-task state (no network)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamer import Report
from streamer.board import Board
from streamer.progress import Step, steps_of


def r(task: str, seq: int, state: str = "running", **progress: object) -> Report:
    return Report(task_id=task, state=state, seq=seq, progress_report=dict(progress))  # type: ignore[arg-type]


def test_steps_nested_capped_and_typed() -> None:
    pulp = {
        "yum_importer": {
            "content": {"items_done": 3, "items_total": 10},
            "errata": {"items_done": 1, "items_total": 2},
            "metadata": {"state": "FINISHED"},
        }
    }
    assert steps_of(pulp) == [
        Step("yum_importer/content", None, 3, 10),
        Step("yum_importer/errata", None, 1, 2),
        Step("yum_importer/metadata", "FINISHED", None, None),
    ]
    assert steps_of({"a": {"done": 5, "total": 4}}) == [Step("a", None, 4, 4)]  # capped
    assert steps_of({"state": "x"}) == []
    assert steps_of({"a": {"items_done": "3", "items_total": 4}}) == [Step("a", None, None, None)]
    assert steps_of({"items_done": 2, "items_total": 8}) == [Step("", None, 2, 8)]
    board = Board()
    board.apply(r("t", 1, **pulp))
    task = board.get("t")
    assert task is not None
    assert (task.done, task.total) == (4, 12)  # items over the steps that count them
    assert task.progress == (0.3 + 0.5 + 1) / 3  # each step weighs the same


def test_latest_wins_stale_and_duplicates_ignored_gaps_counted() -> None:
    board = Board()
    assert board.apply(r("t", 1, content={"items_done": 0, "items_total": 10}), now=0)
    assert board.apply(r("t", 4, content={"items_done": 5, "items_total": 10}), now=5)
    assert not board.apply(r("t", 3), now=6)  # stale
    assert not board.apply(r("t", 4), now=7)  # re-sent after a reconnect
    task = board.get("t")
    assert task is not None
    assert task.report.seq == 4 and task.gaps == 2
    assert (board.stale, board.duplicates, board.reports) == (1, 1, 2)
    assert task.progress == 0.5
    assert task.rate == 1.0  # 5 items in 5 s
    assert task.eta == 5.0
    assert board.apply(r("t", 5, "finished"), now=8)
    assert task.progress == 1.0 and task.eta is None and task.finished
    assert board.by_state() == {"finished": 1}


def test_joining_late_counts_missing_first_reports() -> None:
    board = Board()
    board.apply(r("t", 7))
    assert board.gaps == 6


def test_finished_tasks_evicted_oldest_first() -> None:
    board = Board(max_finished=2, max_tasks=100)
    board.apply(r("active", 1))
    for n in range(5):
        board.apply(r(f"f{n}", 1, "finished"))
    assert [t.task_id for t in board] == ["active", "f3", "f4"]
    assert board.evicted == 3


def test_total_capped_least_recently_updated_go() -> None:
    board = Board(max_finished=10, max_tasks=3)
    for n in range(3):
        board.apply(r(f"a{n}", 1))
    board.apply(r("a0", 2))  # a0 is fresh again
    board.apply(r("a3", 1))
    assert sorted(t.task_id for t in board) == ["a0", "a2", "a3"]


def test_a_task_not_kept_at_all_is_not_returned() -> None:
    """With a cap of 0 a report's task goes at once: apply says so (None), so that a view
    does not note a task the board no longer holds."""
    board = Board(max_finished=0, max_tasks=2)
    assert board.apply(r("a", 1)) is not None
    assert board.apply(r("f", 1, "finished")) is None
    assert [t.task_id for t in board] == ["a"] and board.evicted == 1
    assert board.apply(r("a", 2, "finished")) is None
    assert list(board) == [] and board.evicted == 2
    none = Board(max_tasks=0)
    assert none.apply(r("a", 1)) is None and list(none) == []


def test_task_reopened_after_finish_is_not_evicted_as_finished() -> None:
    board = Board(max_finished=1)
    board.apply(r("t", 1, "finished"))
    board.apply(r("t", 2, "running"))
    board.apply(r("u", 1, "finished"))
    board.apply(r("v", 1, "finished"))
    assert board.get("t") is not None


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 30), st.booleans()), max_size=300))
def test_bounded_and_monotonic(events: list[tuple[int, int, bool]]) -> None:
    board = Board(max_finished=3, max_tasks=4)
    for task, seq, final in events:
        before = board.get(f"t{task}")
        shown = before.report.seq if before else 0
        applied = board.apply(r(f"t{task}", seq, "finished" if final else "running"))
        after = board.get(f"t{task}")
        assert len(board) <= 4
        if applied and after is not None:
            assert after.report.seq == seq
        if not applied:
            assert seq <= shown


@given(
    st.lists(
        st.tuples(
            st.integers(0, 12),  # task
            st.integers(0, 6),  # seq (0: not from a streamer publisher)
            st.sampled_from(["running", "finished", "error", "waiting"]),
        ),
        max_size=200,
    ),
    st.integers(1, 6),
    st.integers(1, 4),
)
def test_kept_counts_equal_a_recount(
    events: list[tuple[int, int, str]], max_tasks: int, max_finished: int
) -> None:
    """The header's figures are kept as reports fold in (O(1) to read); they must always
    equal what counting the board's tasks gives, evictions included."""
    board = Board(max_tasks=max_tasks, max_finished=max_finished)
    for n, (task, seq, state) in enumerate(events):
        board.apply(Report(task_id=f"t{task}", state=state, seq=seq), float(n))  # type: ignore[arg-type]
        tasks = list(board)
        assert board.gaps == sum(t.gaps for t in tasks)
        recount: dict[str, int] = {}
        for t in tasks:
            recount[t.state] = recount.get(t.state, 0) + 1
        assert board.by_state() == recount


def test_a_far_seq_jump_restarts_the_sequence_instead_of_freezing_the_task() -> None:
    """A foreign report with a huge seq must not make the task's genuine reports stale,
    nor count a billion gaps."""
    board = Board(max_seq_jump=1_000)
    for seq in (1, 2, 3):
        board.apply(r("t", seq))
    assert board.apply(r("t", 10**9))  # far ahead: shown, counted, not a gap
    assert (board.jumps, board.gaps) == (1, 0)
    for seq in (4, 5):  # the genuine sequence goes on: not stale
        assert board.apply(r("t", seq)) is not None
    assert board.jumps == 2  # back from 10**9 to 4: the second jump
    assert board.apply(r("t", 7, "finished"))
    task = board.get("t")
    assert task is not None and task.state == "finished"
    assert (board.gaps, board.stale) == (1, 0)  # seq 6 missing, nothing ignored


def test_a_small_jump_is_a_gap_and_a_first_report_far_in_counts_no_gaps() -> None:
    board = Board(max_seq_jump=1_000)
    board.apply(r("t", 1))
    board.apply(r("t", 1_001))  # 999 missing: within the bound, real gaps
    assert (board.gaps, board.jumps) == (999, 0)
    board.apply(r("u", 5_000))  # first seen far in: joined late is not 4,999 missing
    assert (board.gaps, board.jumps) == (999, 1)


def test_latency_outside_zero_to_an_hour_is_clock_skew_not_observed() -> None:
    board = Board()
    now = 10_000.0
    board.apply(Report(task_id="a", state="running", seq=1, sent_at=now - 0.5), now=now)
    board.apply(Report(task_id="a", state="running", seq=2, sent_at=1.0), now=now)
    board.apply(Report(task_id="a", state="running", seq=3, sent_at=now + 60), now=now)
    board.apply(Report(task_id="a", state="running", seq=4, sent_at=1e300), now=now)
    assert board.latency.count == 1 and board.latency.total == 0.5
    assert board.clock_skew == 3


def test_an_unsequenced_report_applies_and_leaves_the_sequence_alone() -> None:
    board = Board()
    board.apply(r("t", 1))
    board.apply(r("t", 2))
    assert board.apply(r("t", 0, "suspended"))  # seq 0: another publisher's; always shown
    assert board.apply(r("t", 3))  # the sequence goes on from 2: no gap, not stale
    assert (board.gaps, board.stale, board.jumps) == (0, 0, 0)
