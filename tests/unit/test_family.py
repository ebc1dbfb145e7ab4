"""Families and groups roll up (no network): children before their parent, a parent that
finishes first, failed children counted, members evicted from a bounded board."""

from __future__ import annotations

from typing import Any

from streamer import Report
from streamer.board import Board


def report(task_id: str, state: str, seq: int, **fields: Any) -> Report:
    return Report(task_id=task_id, state=state, seq=seq, **fields)  # type: ignore[arg-type]


def half(done: int, total: int = 10) -> dict[str, Any]:
    return {"content": {"items_done": done, "items_total": total}}


def test_a_parent_reaches_100_percent_only_when_every_child_finished() -> None:
    board = Board()
    kids = ["c1", "c2", "c3"]
    board.apply(report("c1", "running", 1, progress_report=half(5)), 1)  # before its parent
    board.apply(report("p", "finished", 1, spawned_tasks=kids), 2)  # done before its children
    parent = board.get("p")
    assert parent is not None
    family = board.family(parent, now=2)
    assert family is not None
    assert family.members == 4
    assert family.states == {"finished": 1, "running": 1, "waiting": 2}  # c2, c3 not seen yet
    assert family.progress == (1 + 0.5 + 0 + 0) / 4
    assert family.eta is None  # unseen children: unknown
    assert not family.ended
    for n, kid in enumerate(kids, 2):
        board.apply(report(kid, "finished", n, progress_report=half(10)), 3)
    family = board.family(parent, now=3)
    assert family is not None and family.progress == 1.0 and family.ended
    assert family.text() == "4 of 4 finished"


def test_a_failed_child_is_counted_and_keeps_the_family_below_100() -> None:
    board = Board()
    board.apply(report("p", "running", 1, spawned_tasks=["a", "b"]), 1)
    board.apply(report("a", "finished", 1), 1)
    board.apply(report("b", "error", 1, progress_report=half(3)), 1)
    board.apply(report("p", "finished", 2, spawned_tasks=["a", "b"]), 2)
    parent = board.get("p")
    assert parent is not None
    family = board.family(parent, now=2)
    assert family is not None
    assert family.states == {"finished": 2, "error": 1}
    assert family.text() == "2 of 3 finished, 1 error"
    assert family.progress < 1.0 and family.ended


def test_evicted_members_count_with_their_last_state() -> None:
    board = Board(max_finished=2, max_tasks=100)
    board.apply(report("p", "running", 1, spawned_tasks=["a", "b", "c"]), 1)
    for n, kid in enumerate(["a", "b", "c"]):
        board.apply(report(kid, "finished", 1), 2 + n)
    assert board.get("a") is None  # evicted: only two finished tasks are kept
    parent = board.get("p")
    assert parent is not None
    family = board.family(parent, now=5)
    assert family is not None and family.states == {"running": 1, "finished": 3}


def test_groups_roll_up_and_leave_with_their_last_member() -> None:
    board = Board(max_finished=1, max_tasks=100)
    board.apply(report("s1", "running", 1, group_id="zoo", progress_report=half(5)), 1)
    board.apply(report("s2", "waiting", 1, group_id="zoo"), 1)
    board.apply(report("x", "running", 1, group_id="other"), 1)
    groups = board.groups(now=1)
    assert set(groups) == {"zoo", "other"}
    assert groups["zoo"].members == 2 and groups["zoo"].progress == 0.25
    assert groups["zoo"].states == {"running": 1, "waiting": 1}
    board.apply(report("x", "finished", 2, group_id="other"), 2)
    board.apply(report("y", "finished", 1), 3)  # evicts x: the last of "other"
    assert set(board.groups(now=3)) == {"zoo"}


def test_a_stalled_member_shows_in_the_rollup() -> None:
    board = Board(stall_after=30)
    board.apply(report("p", "running", 1, spawned_tasks=["a"]), 0)
    board.apply(report("a", "running", 1), 0)
    board.apply(report("p", "running", 2, spawned_tasks=["a"]), 100)
    parent = board.get("p")
    assert parent is not None
    family = board.family(parent, now=100)
    assert family is not None and family.states == {"running": 1, "stalled": 1}


def test_links_loops_and_self_references_end() -> None:
    board = Board()
    board.apply(report("a", "running", 1, spawned_tasks=["b", "a"]), 1)
    board.apply(report("b", "running", 1, spawned_tasks=["a"]), 1)  # a loop
    a = board.get("a")
    assert a is not None
    family = board.family(a, now=1)
    assert family is not None and family.members == 2
    assert board.families.root("b") in {"a", "b"}
