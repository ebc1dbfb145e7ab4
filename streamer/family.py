"""Families of tasks on a board: a task and the tasks it spawned (``spawned_tasks``), and
groups of tasks sharing a ``group_id``, with their progress, states and ETA rolled up.

Reports arrive in any order across tasks: a child may be seen before its parent, a parent may
finish long before its children, and a bounded board evicts old members. So links are kept
from what reports say (a parent lists its children; a task names its group), children listed
but not seen yet count as waiting, and a member that left the board counts with the state it
had when it left (kept while its family or group is still on the board).

Kept up per report at the cost of a check or two (most reports repeat what their task said
before); rolled up only when a view asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .report import TERMINAL_STATES, Report

if TYPE_CHECKING:
    from .board import TaskState

__all__ = ["Families", "Rollup"]

_MAX_MEMBERS: Final = 1_000  # members rolled up at most (a family of a million is not a view)
_MAX_DEPTH: Final = 8  # parent links followed at most (and a loop of links ends)
_UNSEEN: Final = "waiting"  # the state of a listed child not seen yet
_MAX_GONE: Final = 10_000  # last states kept of members that left the board (oldest go)


@dataclass(frozen=True, slots=True)
class Rollup:
    """A family or group as one line: how far along, in which states, how long to go.

    Attributes:
        members: tasks in it (listed children not seen yet included).
        progress: mean of the members' progress, 0..1 (a finished member 1; unknown or not
            seen 0); 1 only when every member finished.
        states: members per state.
        eta: seconds until the slowest active member is done; None when one is unknown.
    """

    members: int
    progress: float
    states: dict[str, int]
    eta: float | None

    @property
    def ended(self) -> bool:
        return all(state in TERMINAL_STATES for state in self.states)

    def text(self) -> str:
        """``"3 of 5 finished, 1 error, 1 running"``: the finished first, then the rest."""
        parts = [f"{self.states.get('finished', 0)} of {self.members} finished"]
        parts += [
            f"{n} {state}"
            for state, n in sorted(self.states.items(), key=lambda kv: (-kv[1], kv[0]))
            if state != "finished"
        ]
        return ", ".join(parts)


class Families:
    """Parent links and groups of the tasks on one board."""

    def __init__(self) -> None:
        self._parent_of: dict[str, str] = {}  # child id -> parent id
        self._listed: dict[str, int] = {}  # parent id -> children it listed (a cheap re-check)
        self._group_of: dict[str, str] = {}  # task id -> group id
        self._groups: dict[str, dict[str, None]] = {}  # group id -> its members, in order
        self._gone: dict[str, str] = {}  # member that left the board -> its last state

    def saw(self, report: Report) -> None:
        """A report was folded in: note what it says of its task's children and group."""
        spawned = report.spawned_tasks
        task_id = report.task_id
        if spawned and self._listed.get(task_id) != len(spawned):
            self._listed[task_id] = len(spawned)
            for child in spawned:
                if child != task_id:
                    self._parent_of[child] = task_id
        group = report.group_id
        if group is not None and self._group_of.get(task_id) != group:
            self._leave_group(task_id)
            self._group_of[task_id] = group
            self._groups.setdefault(group, {})[task_id] = None

    def forget(self, task: TaskState) -> None:
        """``task`` left the board: keep its last state while its family or group remains."""
        task_id = task.task_id
        parent = self._parent_of.get(task_id)
        group = self._group_of.get(task_id)
        if parent is not None or group is not None:
            self._gone[task_id] = task.state
            if len(self._gone) > _MAX_GONE:  # forget the oldest, from its group too
                oldest = next(iter(self._gone))
                del self._gone[oldest]
                self._leave_group(oldest)
        if self._listed.pop(task_id, None) is not None:  # a parent: its children's links go
            for child in task.report.spawned_tasks:
                if self._parent_of.get(child) == task_id:
                    del self._parent_of[child]
                    self._gone.pop(child, None)
        if group is not None and all(
            member == task_id or member in self._gone for member in self._groups.get(group, ())
        ):  # the last of its group on the board: the group goes
            for member in self._groups.pop(group, {}):
                self._group_of.pop(member, None)
                self._gone.pop(member, None)

    def _leave_group(self, task_id: str) -> None:
        old = self._group_of.pop(task_id, None)
        if old is not None:
            members = self._groups.get(old)
            if members is not None:
                members.pop(task_id, None)
                if not members:
                    del self._groups[old]

    # -- what views ask --------------------------------------------------------------------

    def parent(self, task_id: str) -> str | None:
        return self._parent_of.get(task_id)

    def root(self, task_id: str) -> str:
        """The topmost ancestor known (``task_id`` itself when it has no parent)."""
        seen = {task_id}
        for _ in range(_MAX_DEPTH):
            parent = self._parent_of.get(task_id)
            if parent is None or parent in seen:
                break
            seen.add(parent)
            task_id = parent
        return task_id

    def groups(self) -> dict[str, list[str]]:
        """Group id -> its members (those on the board and those that left it)."""
        return {group: list(members) for group, members in self._groups.items()}

    def family(self, task: TaskState, get: Callable[[str], TaskState | None]) -> list[str]:
        """``task`` and its descendants (listed children, theirs, ...), parents first."""
        members = [task.task_id]
        seen = set(members)
        queue = [task]
        while queue and len(members) < _MAX_MEMBERS:
            node = queue.pop(0)
            for child in node.report.spawned_tasks:
                if child in seen:
                    continue
                seen.add(child)
                members.append(child)
                found = get(child)
                if found is not None:
                    queue.append(found)
        return members[:_MAX_MEMBERS]

    def rollup(
        self,
        members: Iterable[str],
        get: Callable[[str], TaskState | None],
        now: float,
        stall_after: float,
    ) -> Rollup:
        """Progress, states and ETA of ``members`` (ids: on the board, gone or not seen); a
        member silent beyond the stall bound counts as ``stalled``."""
        count = 0
        total = 0.0
        states: dict[str, int] = {}
        eta: float | None = 0.0
        for task_id in members:
            count += 1
            task = get(task_id)
            if task is None:
                state = self._gone.get(task_id, _UNSEEN)
                total += 1.0 if state == "finished" else 0.0
                if state not in TERMINAL_STATES:
                    eta = None  # not seen yet: how long it will take is anyone's guess
            else:
                state = "stalled" if task.stalled(now, stall_after) else task.state
                total += task.progress or 0.0
                if not task.finished:
                    member_eta = task.eta
                    eta = None if eta is None or member_eta is None else max(eta, member_eta)
            states[state] = states.get(state, 0) + 1
        if count and all(state in TERMINAL_STATES for state in states):
            eta = None
        return Rollup(count, total / count if count else 0.0, states, eta)
