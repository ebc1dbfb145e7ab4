"""The JSON API: ``/api/tasks`` (filtered, most recently updated first) and
``/api/tasks/<id>`` (one task, its latest report and its recent history)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from ..board import Board, TaskState
from ..report import TERMINAL_STATES
from .rows import Entry, Row, Summary, encode

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
            rows.append(Row.of(task, stalled=self.board.stalled(task, now)))
            if limit is not None and len(rows) >= limit:
                break
        body = {"now": now, "summary": self.summary(), "tasks": rows}
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
            "task": Row.of(task, stalled=self.board.stalled(task, now)),
            "report": task.report,
            "history": [
                {
                    "first": e.first,
                    "at": e.at,
                    "first_seq": e.first_seq,
                    "seq": e.seq,
                    "state": e.state,
                    "reports": e.reports,
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
