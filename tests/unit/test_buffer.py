"""The coalescing buffer (no network)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from streamer.buffer import Buffer, Put


@dataclass
class E:
    task: str
    n: int
    sticky: bool = False


def test_newer_report_supersedes_waiting_one() -> None:
    buf: Buffer[E] = Buffer(1, 10)
    assert buf.put(0, "a", E("a", 1)) is Put.ADDED
    assert buf.put(0, "a", E("a", 2)) is Put.COALESCED
    assert len(buf) == 1
    assert buf.take(0, 10) == [E("a", 2)]


def test_sticky_report_is_never_superseded() -> None:
    buf: Buffer[E] = Buffer(1, 10)
    buf.put(0, "a", E("a", 1, sticky=True))
    assert buf.put(0, "a", E("a", 2)) is Put.ADDED
    assert buf.put(0, "a", E("a", 3)) is Put.COALESCED
    assert buf.take(0, 10) == [E("a", 1, True), E("a", 3)]


def test_full_buffer_refuses_but_still_coalesces() -> None:
    buf: Buffer[E] = Buffer(2, 2)
    buf.put(0, "a", E("a", 1))
    buf.put(1, "b", E("b", 1))
    assert buf.put(0, "c", E("c", 1)) is Put.FULL
    assert buf.put(0, "a", E("a", 2)) is Put.COALESCED
    buf.reserved = 1
    assert buf.put(1, "d", E("d", 1)) is Put.FULL


def test_take_is_fifo_by_task_and_partial() -> None:
    buf: Buffer[E] = Buffer(1, 10)
    buf.put(0, "a", E("a", 1, True))
    buf.put(0, "a", E("a", 2, True))
    buf.put(0, "b", E("b", 1))
    assert buf.take(0, 1) == [E("a", 1, True)]
    assert buf.take(0, 10) == [E("a", 2, True), E("b", 1)]
    assert len(buf) == 0


def test_clear_returns_what_was_waiting() -> None:
    buf: Buffer[E] = Buffer(2, 10)
    buf.put(0, "a", E("a", 1))
    buf.put(1, "b", E("b", 1))
    assert buf.clear(0) == [E("a", 1)]
    assert len(buf) == 1


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 5), st.booleans(), st.integers(0, 3)),
        max_size=200,
    )
)
def test_invariants(ops: list[tuple[int, int, bool, int]]) -> None:
    """Per task order kept, size bounded, every put accounted for."""
    buf: Buffer[E] = Buffer(3, 8)
    added = coalesced = full = 0
    taken: list[E] = []
    for counter, (channel, task, sticky, take) in enumerate(ops, 1):
        result = buf.put(channel, f"{channel}-{task}", E(f"{channel}-{task}", counter, sticky))
        added += result is Put.ADDED
        coalesced += result is Put.COALESCED
        full += result is Put.FULL
        assert len(buf) <= 8
        if take:
            taken += buf.take(channel, take)
    for channel in range(3):
        taken += buf.take(channel, 100)
    assert len(taken) == added
    last: dict[str, int] = {}
    for e in taken:
        assert last.get(e.task, 0) < e.n
        last[e.task] = e.n


def test_without_pressure_reports_queue_up() -> None:
    buf: Buffer[E] = Buffer(2, 3)
    assert buf.put(0, "a", E("a", 1), coalesce=False) is Put.ADDED
    assert buf.put(0, "a", E("a", 2), coalesce=False) is Put.ADDED
    assert buf.count(0) == 2 and buf.count(1) == 0
    assert buf.put(0, "a", E("a", 3), coalesce=False) is Put.ADDED
    # full: superseding is still better than refusing the newest state
    assert buf.put(0, "a", E("a", 4), coalesce=False) is Put.COALESCED
    assert buf.take(0, 10) == [E("a", 1), E("a", 2), E("a", 4)]
    assert buf.count(0) == 0
