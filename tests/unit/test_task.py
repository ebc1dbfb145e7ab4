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
