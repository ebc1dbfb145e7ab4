"""Micro benchmarks of the coalescing buffer, the publisher's queue of waiting reports.

Under load every report goes through ``Buffer.put`` once and ``Buffer.take`` once; under
pressure (the confirm window is full) ``put`` supersedes the task's waiting report instead.
"""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from streamer.buffer import Buffer, Put

TASKS = 1000


class _Entry:
    __slots__ = ("sticky",)

    def __init__(self, sticky: bool = False) -> None:
        self.sticky = sticky


ENTRIES = [_Entry() for _ in range(TASKS)]
KEYS = [object() for _ in range(TASKS)]


def test_put_and_take_10k(benchmark: BenchmarkFixture) -> None:
    """10,000 reports over 1,000 tasks queued, then written in windows of 1,000."""

    def cycle() -> int:
        buffer: Buffer[_Entry] = Buffer(1, 20_000)
        put = buffer.put
        for _ in range(10):
            for key, entry in zip(KEYS, ENTRIES, strict=True):
                put(0, key, entry, False)
        taken = 0
        while len(buffer):
            taken += len(buffer.take(0, 1000))
        return taken

    assert benchmark(cycle) == 10 * TASKS


def test_put_coalescing_under_pressure(benchmark: BenchmarkFixture) -> None:
    """10,000 puts while the window is full: each supersedes its task's waiting report."""
    buffer: Buffer[_Entry] = Buffer(1, 20_000)
    for key, entry in zip(KEYS, ENTRIES, strict=True):
        buffer.put(0, key, entry, True)

    def coalesce() -> int:
        put = buffer.put
        coalesced = 0
        for _ in range(10):
            for key, entry in zip(KEYS, ENTRIES, strict=True):
                coalesced += put(0, key, entry, True) is Put.COALESCED
        return coalesced

    assert benchmark(coalesce) == 10 * TASKS
    assert len(buffer) == TASKS
