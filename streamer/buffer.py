"""The bounded buffer of reports waiting to be written, one FIFO of tasks per channel.

Per channel, because a task always uses one channel and each channel has its own confirm
window: the writer drains exactly the channels that have room, without scanning the others.
Per task, because under pressure a newer report of a task supersedes its older one that is
still waiting (coalescing): a dashboard wants the latest state, not a backlog. The caller
says when it is under pressure (its confirm window is full); otherwise reports queue up
behind each other. A terminal report is never superseded, and nothing is ever reordered
within a task.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final, Generic, Protocol, TypeVar

__all__ = ["Buffer", "Put"]


class _Entry(Protocol):
    @property
    def sticky(self) -> bool:
        """True when no later report may supersede this one (e.g. a terminal report)."""


E = TypeVar("E", bound=_Entry)


class Put(enum.IntEnum):
    """What ``Buffer.put`` did with a report."""

    ADDED = 0
    COALESCED = 1  # replaced the task's waiting older report (which is now gone)
    FULL = 2  # the buffer holds max_size reports; the new one was not taken


class Buffer(Generic[E]):
    """Reports waiting for their channel, at most ``max_size`` in all.

    Args:
        channels: number of channel queues.
        max_size: reports held at most across all queues (callers may lower the effective
            cap by counting in-flight reports in ``reserved``).
    """

    def __init__(self, channels: int, max_size: int) -> None:
        self._queues: Final[list[OrderedDict[object, list[E]]]] = [
            OrderedDict() for _ in range(channels)
        ]
        self.max_size = max_size
        self.reserved = 0
        self._size = 0
        self._counts = [0] * channels

    def __len__(self) -> int:
        return self._size

    def waiting(self, channel: int) -> int:
        """Tasks with reports waiting on ``channel``."""
        return len(self._queues[channel])

    def count(self, channel: int) -> int:
        """Reports waiting on ``channel``."""
        return self._counts[channel]

    def put(self, channel: int, task: object, entry: E, coalesce: bool = True) -> Put:
        """Queue ``entry`` for ``task``.

        With ``coalesce`` (the caller is under pressure) it supersedes the task's waiting
        non-terminal report instead of queueing behind it; a full buffer still takes that.
        """
        queue = self._queues[channel]
        waiting = queue.get(task)
        if (
            waiting is not None
            and not waiting[-1].sticky
            and (coalesce or self._size + self.reserved >= self.max_size)
        ):
            waiting[-1] = entry
            return Put.COALESCED
        if self._size + self.reserved >= self.max_size:
            return Put.FULL
        if waiting is None:
            queue[task] = [entry]
        else:
            waiting.append(entry)
        self._size += 1
        self._counts[channel] += 1
        return Put.ADDED

    def take(self, channel: int, limit: int) -> list[E]:
        """Remove and return up to ``limit`` reports of ``channel``, oldest task first."""
        queue = self._queues[channel]
        out: list[E] = []
        while queue and len(out) < limit:
            task, entries = queue.popitem(last=False)
            room = limit - len(out)
            if len(entries) <= room:
                out.extend(entries)
            else:
                out.extend(entries[:room])
                queue[task] = entries[room:]
                queue.move_to_end(task, last=False)
        self._size -= len(out)
        self._counts[channel] -= len(out)
        return out

    def clear(self, channel: int) -> list[E]:
        """Remove and return every report waiting on ``channel``."""
        queue = self._queues[channel]
        out = [entry for entries in queue.values() for entry in entries]
        queue.clear()
        self._size -= len(out)
        self._counts[channel] = 0
        return out
