"""The progress a view shows never goes back unless the work grew; the ETA is never 0 while
work remains (no network)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer import Report
from streamer.board import Board
from streamer.progress import Progress


@st.composite
def task_runs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[bool]]:
    """The ``progress_report`` of every report of one task, and which of them a view reads.

    Steps progress interleaved (any unfinished step may advance next), a step's total may
    rise now and then, a counter may fall back (a retried batch), a report may leave a step
    out, and the steps are declared ahead or appear as they start.
    """
    n_steps = draw(st.integers(1, 4))
    totals = [draw(st.one_of(st.none(), st.integers(0, 30))) for _ in range(n_steps)]
    declared = draw(st.booleans())
    done = [0] * n_steps
    states = ["NOT_STARTED"] * n_steps
    started = [declared] * n_steps
    reports: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 60))):
        open_steps = [i for i in range(n_steps) if states[i] != "FINISHED"]
        if not open_steps:
            break
        i = draw(st.sampled_from(open_steps))
        started[i] = True
        action = draw(
            st.sampled_from(["advance", "advance", "advance", "finish", "grow", "fall back"])
        )
        total = totals[i]
        if action == "fall back":
            done[i] = max(done[i] - draw(st.integers(1, 5)), 0)
        elif action == "grow" and total is not None:
            totals[i] = total + draw(st.integers(1, 10))
        elif action == "finish" or (total is not None and done[i] >= total):
            states[i] = "FINISHED"
            if total is not None:
                done[i] = total
        else:
            states[i] = "IN_PROGRESS"
            done[i] += 1 if total is None or done[i] < total else 0
        report: dict[str, Any] = {}
        left_out = draw(st.one_of(st.none(), st.integers(0, n_steps - 1)))
        for j in range(n_steps):
            if not started[j] or j == left_out:
                continue
            entry: dict[str, Any] = {"state": states[j]}
            if totals[j] is not None:
                entry.update(items_done=min(done[j], totals[j]), items_total=totals[j])
            report[f"step{j}"] = entry
        reports.append(report)
    reads = draw(st.lists(st.booleans(), min_size=len(reports), max_size=len(reports)))
    return reports, reads


@settings(max_examples=400, deadline=None)
@given(task_runs())
def test_shown_progress_never_decreases_unless_the_work_grew(
    run: tuple[list[dict[str, Any]], list[bool]],
) -> None:
    reports, reads = run
    progress = Progress()
    shown: list[float] = []
    for n, (report, read) in enumerate(zip(reports, reads, strict=True)):
        if not read and n != len(reports) - 1:
            continue  # a view does not read every report: it reads the latest when it draws
        before = progress.fraction
        progress.update(report, at=float(n))
        assert 0.0 <= progress.fraction <= 1.0
        if not progress.grew:
            assert progress.fraction >= before, (before, progress.fraction, report)
        shown.append(progress.fraction)
        eta = progress.eta()
        if progress.fraction < 1.0:
            assert eta is None or eta >= 1.0, eta  # unknown, never 0 while work remains
        else:
            assert eta is None


def test_declared_steps_make_a_four_step_sync_rise_steadily() -> None:
    """The case from the issue: a sync whose steps come one after the other showed 100% → 11%
    → 100% → 69% (progress summed over the steps seen so far). Declared ahead, each step
    weighs a quarter from the first report."""
    steps = {"metadata": 3, "content": 50, "errata": 10, "publish": 1}
    progress_report: dict[str, Any] = {name: {"state": "NOT_STARTED"} for name in steps}
    board = Board()
    board.apply(Report(task_id="t", state="running", seq=1, progress_report=progress_report), 0)
    shown = []
    seq, now = 1, 0.0
    for name, total in steps.items():
        for done in range(total + 1):
            state = "FINISHED" if done == total else "IN_PROGRESS"
            entry = {"state": state, "items_done": done, "items_total": total}
            progress_report = {**progress_report, name: entry}
            seq, now = seq + 1, now + 0.1
            report = Report(task_id="t", state="running", seq=seq, progress_report=progress_report)
            task = board.apply(report, now)
            assert task is not None
            shown.append(task.progress)
            assert task.eta is None or task.eta >= 1.0
    assert shown == sorted(shown)  # never backwards
    assert shown[0] == 0.0 and shown[-1] == 1.0
    assert abs(shown[3] - 0.25) < 1e-9  # metadata (3 items) done: a quarter, not 100%


def test_a_finished_task_shows_its_average_rate_not_its_last_burst() -> None:
    board = Board()
    items = {"content": {"items_done": 0, "items_total": 100}}
    board.apply(Report(task_id="t", state="running", seq=1, progress_report=items), 0.0)
    items = {"content": {"items_done": 99, "items_total": 100}}
    board.apply(Report(task_id="t", state="running", seq=2, progress_report=items), 99.0)
    items = {"content": {"items_done": 100, "items_total": 100}}
    task = board.apply(Report(task_id="t", state="finished", seq=3, progress_report=items), 99.001)
    assert task is not None
    assert task.rate is not None and abs(task.rate - 100 / 99.001) < 1e-6  # not 1,000/s


def test_a_silent_task_is_stalled_until_its_next_report() -> None:
    board = Board(stall_after=30.0)
    for n in range(1, 11):
        board.apply(Report(task_id="t", state="running", seq=n), now=n * 10.0)  # every 10 s
    task = board.get("t")
    assert task is not None
    assert not board.stalled(task, now=100.0 + 99)  # 10 x its 10 s interval not yet over
    assert board.stalled(task, now=100.0 + 101)
    assert board.count_stalled(now=201.0) == 1
    board.apply(Report(task_id="t", state="running", seq=11), now=201.0)  # it speaks again
    assert not board.stalled(task, now=202.0) and board.count_stalled(now=202.0) == 0
    board.apply(Report(task_id="t", state="finished", seq=12), now=203.0)
    assert not board.stalled(task, now=10_000.0)  # an ended task is never stalled
    fast = Board(stall_after=30.0)
    for n in range(1, 11):
        fast.apply(Report(task_id="f", state="running", seq=n), now=n * 0.1)
    quick = fast.get("f")
    assert quick is not None
    assert not fast.stalled(quick, now=1.0 + 29) and fast.stalled(quick, now=1.0 + 31)


def test_the_usual_interval_recovers_from_reports_that_came_together() -> None:
    """Reports of one socket read share a time (a gap of 0): the estimate must still grow
    when the task slows down, so a slow task is not called stalled after 30 s."""
    board = Board(stall_after=30.0)
    for seq in (1, 2):
        board.apply(Report(task_id="t", state="running", seq=seq), now=0.0)  # one read
    now = 0.0
    for seq in range(3, 200):  # then one report a minute
        now += 60.0
        board.apply(Report(task_id="t", state="running", seq=seq), now=now)
    task = board.get("t")
    assert task is not None and task.interval is not None and task.interval > 50
    assert not board.stalled(task, now=now + 300)  # 5 min: not 10 usual intervals yet
    assert board.stalled(task, now=now + 60 * 11)


@given(task_runs())
def test_the_step_under_way_is_what_a_view_would_read(
    runs: tuple[list[dict[str, Any]], list[bool]],
) -> None:
    """TaskState.step (the dashboard's history looks at it once a second, cheaply) names the
    step a full read of the same report shows under way, whether a view read it already or
    not, and from the viewing tools' undecoded reports too."""
    from streamer.progress import current_step
    from streamer.report import decode_received, encode

    reports, reads = runs
    board, lazy = Board(), Board()
    latest: dict[str, Any] = {}  # the latest progress_report that said something
    for seq, (progress, read) in enumerate(zip(reports, reads, strict=True), 1):
        report = Report(task_id="t", state="running", seq=seq, progress_report=progress)
        task = board.apply(report, float(seq))
        other = lazy.apply(decode_received(encode(report)), float(seq))
        assert task is not None and other is not None
        latest = progress or latest
        full = Progress()
        full.update(latest, 0.0)
        expected = "" if full.current is None else full.current.name
        if read:
            task.steps  # a view read it: the step comes from that read  # noqa: B018
        assert task.step == other.step == current_step(latest) == expected
