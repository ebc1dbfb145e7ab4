"""The task-side helper: state transitions, progress shape, errors (no network)."""

from __future__ import annotations

import pytest

from streamer import Report, TaskError, TaskReporter


def reporter(**fields: object) -> tuple[TaskReporter, list[Report]]:
    sent: list[Report] = []
    return TaskReporter(sent.append, "t1", **fields), sent  # type: ignore[arg-type]


def test_lifecycle_and_progress() -> None:
    task, sent = reporter(task_type="sync", tags=["repo:zoo"], worker_name="w@h:1")
    task.waiting()
    task.accepted()
    with task:
        task.progress(1, 4, step="metadata")
        task.progress(4, 4, step="metadata")
        task.progress(2, 10, step="content", size_done=123)
        task.spawn("t2")
    assert [r.state for r in sent] == [
        "waiting",
        "accepted",
        "running",
        "running",
        "running",
        "running",
        "finished",
    ]
    last = sent[-1]
    assert last.progress_report == {
        "metadata": {"items_done": 4, "items_total": 4, "state": "FINISHED"},
        "content": {"items_done": 2, "items_total": 10, "state": "IN_PROGRESS", "size_done": 123},
    }
    assert last.spawned_tasks == ["t2"]
    assert last.task_type == "sync" and last.tags == ["repo:zoo"] and last.worker_name == "w@h:1"
    assert last.start_time is not None and last.finish_time is not None
    assert last.start_time <= last.finish_time
    assert sent[2].progress_report == {}  # reports are snapshots, not shared dicts
    assert sent[3].progress_report == {
        "metadata": {"items_done": 1, "items_total": 4, "state": "IN_PROGRESS"}
    }


def test_declared_steps_are_listed_from_the_first_report() -> None:
    from streamer.board import Board

    task, sent = reporter(steps=["metadata", "content", "errata"])
    with task:
        task.progress(3, 3, step="metadata")
        task.progress(1, 10, step="content")
    assert sent[0].progress_report == {
        "metadata": {"state": "NOT_STARTED"},
        "content": {"state": "NOT_STARTED"},
        "errata": {"state": "NOT_STARTED"},
    }
    assert list(sent[1].progress_report) == ["metadata", "content", "errata"]
    assert sent[1].progress_report["errata"] == {"state": "NOT_STARTED"}
    board = Board()
    shown = []
    for seq, report in enumerate(sent[:-1], 1):
        state = board.apply(Report(**{**_fields(report), "seq": seq}), float(seq))  # type: ignore[arg-type]
        assert state is not None
        shown.append(state.progress)
    assert shown == pytest.approx([0.0, 1 / 3, (1 + 0.1) / 3])  # each declared step: a third


def _fields(report: Report) -> dict[str, object]:
    return {name: getattr(report, name) for name in report.__struct_fields__}


def test_exception_reports_error_and_propagates() -> None:
    task, sent = reporter()
    with pytest.raises(ZeroDivisionError), task:
        1 / 0  # noqa: B018
    assert sent[-1].state == "error"
    error = sent[-1].error
    assert isinstance(error, TaskError)
    assert error.code == "ZeroDivisionError" and "division by zero" in error.description
    assert "Traceback" in error.data["traceback"]


def test_keyboard_interrupt_cancels() -> None:
    task, sent = reporter()
    with pytest.raises(KeyboardInterrupt), task:
        raise KeyboardInterrupt
    assert sent[-1].state == "canceled"


def test_no_transition_after_the_end() -> None:
    task, sent = reporter()
    task.start()
    task.fail("disk full", code="ENOSPC")
    assert sent[-1].error == TaskError(code="ENOSPC", description="disk full")
    with pytest.raises(RuntimeError, match="already ended"):
        task.progress(1, 2)
    with task:  # an ended task is left as it is
        pass
    assert len(sent) == 2
