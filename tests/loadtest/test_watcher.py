"""The watcher's per-task sequence bookkeeping (loadtest/watcher.py): no broker."""

from __future__ import annotations

from loadtest.watcher import SeqTracker


def test_counts_gaps_out_of_order_and_duplicates_per_task() -> None:
    t = SeqTracker()
    for seq in (1, 2, 5, 4, 5, 6):  # 3 lost, 4 late (fills its gap), 5 repeated
        t.observe("a", seq, "running", 0.002)
    t.observe("b", 3, "running", 0.001)  # joined late: 1 and 2 count as lost
    t.observe("b", 4, "finished", 0.004)
    assert (t.received, t.lost, t.out_of_order, t.duplicates) == (8, 3, 1, 1)
    rows = {r["task_id"]: r for r in t.rows()}
    assert rows["a"] == {
        "task_id": "a",
        "state": "running",
        "last_seq": 6,
        "received": 6,
        "lost": 1,
        "out_of_order": 1,
        "duplicates": 1,
        "e2e_max_ms": 2.0,
    }
    assert rows["b"]["lost"] == 2 and rows["b"]["state"] == "finished"
    assert t.latency.count == 8 and t.snapshot()["tasks"] == 2


def test_tasks_are_bounded() -> None:
    t = SeqTracker(max_tasks=10)
    for n in range(25):
        t.observe(f"t{n}", 1, "waiting", 0.0)
    assert len(t.tasks) == 10 and t.evicted == 15 and "t24" in t.tasks
