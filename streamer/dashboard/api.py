"""The JSON API: ``/api/tasks`` (filtered, most recently updated first),
``/api/tasks/<id>`` (one task, its latest report and its history) and ``/api/groups`` (groups
of tasks rolled up)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from ..board import Board, TaskState
from ..report import TERMINAL_STATES
from .rows import Entry, FamilyRow, Row, Summary, encode

__all__ = ["TaskApi"]


class TaskApi:
    """The API's handlers over one board and its per-task history."""

    def __init__(
        self,
        board: Board,
        history: Mapping[str, deque[Entry]],
        summary: Callable[[], Summary],
    ) -> None:
        self.board = board
        self.history = history
        self.summary = summary

    async def tasks(self, request: web.Request) -> web.Response:
        """All tasks, most recently updated first; ``state``, ``tag``, ``q`` and ``limit``
        narrow them (``state`` may be a comma list, or ``active`` / ``ended``)."""
        query = request.query
        states = {s for s in query.get("state", "").split(",") if s}
        tag = query.get("tag")
        text = query.get("q", "").lower()
        try:
            limit = int(query.get("limit", "0")) or None
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer\n") from None
        rows = []
        now = time.time()
        for task in self.board.recent():
            if states and not _state_matches(task.state, states):
                continue
            if tag is not None and tag not in task.report.tags:
                continue
            if text and not _text_matches(task, text):
                continue
            rows.append(Row.of(task, self.board, now))
            if limit is not None and len(rows) >= limit:
                break
        body = {"now": now, "summary": self.summary(), "tasks": rows}
        return web.Response(body=encode(body), content_type="application/json")

    async def groups(self, request: web.Request) -> web.Response:
        """Every group (``group_id``) with a member on the board, rolled up: active groups
        first, then by name."""
        now = time.time()
        rollups = self.board.groups(now)
        order = sorted(rollups, key=lambda group: (rollups[group].ended, group))
        body = {
            "now": now,
            "groups": [
                {"id": group, **msgspec.structs.asdict(FamilyRow.of(rollups[group]))}
                for group in order
            ],
        }
        return web.Response(body=encode(body), content_type="application/json")

    async def task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        task = self.board.get(task_id)
        if task is None:
            missing = {"error": "no such task on the board (never seen, or evicted)"}
            return web.Response(status=404, body=encode(missing), content_type="application/json")
        now = time.time()
        body: dict[str, Any] = {
            "now": now,
            "task": Row.of(task, self.board, now),
            "report": task.report,
            "history": [
                {
                    "first": e.first,
                    "at": e.at,
                    "first_seq": e.first_seq,
                    "seq": e.seq,
                    "state": e.state,
                    "reports": e.reports,
                    "step": e.step,
                    "latency": max(e.at - e.sent_at, 0.0) if e.sent_at else None,
                }
                for e in self.history.get(task_id, ())
            ],
        }
        return web.Response(body=encode(body), content_type="application/json")


def _state_matches(state: str, wanted: set[str]) -> bool:
    if state in wanted:
        return True
    ended = state in TERMINAL_STATES
    return ("ended" in wanted and ended) or ("active" in wanted and not ended)


def _text_matches(task: TaskState, text: str) -> bool:
    report = task.report
    fields = (task.task_id, report.task_type or "", report.worker_name or "", *report.tags)
    return any(text in value.lower() for value in fields)
