"""A task's side of reporting: state transitions, progress and timestamps in one object.

So that a worker never builds reports by hand::

    with pub.task(task_id, task_type="sync", tags=["repo:zoo"]) as task:
        for n, unit in enumerate(units, 1):
            download(unit)
            task.progress(n, len(units), step="content", size_done=...)
        task.finish({"units": len(units)})

Leaving the ``with`` block through an exception reports ``error`` with the exception (and
lets it propagate); leaving it normally finishes the task if nothing else ended it.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from .report import TERMINAL_STATES, Report, State, TaskError

__all__ = ["NOT_STARTED", "TaskReporter", "fingerprint"]

#: The state of a declared step that has not started (Pulp's spelling).
NOT_STARTED = "NOT_STARTED"


def _now() -> datetime:
    return datetime.now(UTC)


def fingerprint(app_id: str) -> str:
    """Who is sending, as ``<app_id>@<host>:<pid>`` (the pid as of now: forks differ)."""
    return f"{app_id}@{socket.gethostname()}:{os.getpid()}"


class TaskReporter:
    """Publishes the reports of one task as it runs.

    Args:
        publish: where reports go (``Publisher.publish`` or ``BackgroundPublisher.publish``).
        task_id: the task; must be usable in a routing key.
        task_type, tags, queue, group_id: copied into every report.
        worker_name: who runs the task (default: the publisher's fingerprint).
        steps: the steps it will go through, declared ahead: every report lists them all,
            ``{"state": "NOT_STARTED"}`` until :meth:`progress` names them. Viewers weigh
            each step the same, so with steps declared the overall bar never goes back when
            the next step starts.
    """

    def __init__(
        self,
        publish: Callable[[Report], None],
        task_id: str,
        *,
        task_type: str | None = None,
        tags: Iterable[str] = (),
        queue: str | None = None,
        group_id: str | None = None,
        worker_name: str | None = None,
        steps: Iterable[str] = (),
    ) -> None:
        self._publish = publish
        self.task_id = task_id
        self.state: State = "waiting"
        self.progress_report: dict[str, Any] = {step: {"state": NOT_STARTED} for step in steps}
        self.spawned_tasks: list[str] = []
        self.start_time: datetime | None = None
        self.finish_time: datetime | None = None
        self._fixed: dict[str, Any] = {
            "task_type": task_type,
            "tags": list(tags),
            "queue": queue,
            "group_id": group_id,
            "worker_name": worker_name,
        }

    @property
    def done(self) -> bool:
        """True once the task reached a terminal state (finished, error, canceled, skipped)."""
        return self.state in TERMINAL_STATES

    def _send(self, state: State, **fields: Any) -> None:
        if self.done:
            raise RuntimeError(
                f"task {self.task_id!r} already ended ({self.state}); it cannot become {state}"
            )
        self.state = state
        self._publish(
            Report(
                task_id=self.task_id,
                state=state,
                progress_report=self.progress_report,
                spawned_tasks=list(self.spawned_tasks),
                start_time=self.start_time,
                finish_time=self.finish_time,
                **self._fixed,
                **fields,
            )
        )

    def waiting(self) -> None:
        """Report the task as queued."""
        self._send("waiting")

    def accepted(self) -> None:
        """Report the task as picked up by a worker, not yet running."""
        self._send("accepted")

    def start(self) -> None:
        """Report the task as running (sets ``start_time``)."""
        self.start_time = self.start_time or _now()
        self._send("running")

    def progress(
        self,
        done: int | None = None,
        total: int | None = None,
        *,
        step: str = "progress",
        **details: Any,
    ) -> None:
        """Report progress of ``step``: ``done`` of ``total`` items, plus any ``details``.

        The ``progress_report`` keeps one entry per step (Pulp's shape), so a report always
        carries every step declared or seen so far; consumers read ``items_done``/
        ``items_total``.
        """
        if self.start_time is None:
            self.start_time = _now()
        entry: dict[str, Any] = dict(self.progress_report.get(step, {}))
        if done is not None:
            entry["items_done"] = done
        if total is not None:
            entry["items_total"] = total
        entry["state"] = "FINISHED" if total is not None and done == total else "IN_PROGRESS"
        entry.update(details)
        self.progress_report = {**self.progress_report, step: entry}
        self._send("running")

    def spawn(self, task_id: str) -> None:
        """Record a task this one started (listed in ``spawned_tasks`` from now on)."""
        self.spawned_tasks.append(task_id)

    def finish(self, result: Any = None) -> None:
        """Report the task as finished with ``result``."""
        self.finish_time = _now()
        self._send("finished", result=result)

    def fail(self, error: BaseException | TaskError | str, *, code: str | None = None) -> None:
        """Report the task as failed; an exception's type, message and traceback are kept."""
        if isinstance(error, TaskError):
            task_error = error
        elif isinstance(error, BaseException):
            task_error = TaskError(
                code=code or type(error).__name__,
                description=str(error),
                data={"traceback": "".join(traceback.format_exception(error))[-8000:]},
            )
        else:
            task_error = TaskError(code=code or "error", description=error)
        self.finish_time = _now()
        self._send("error", error=task_error)

    def cancel(self) -> None:
        """Report the task as canceled."""
        self.finish_time = _now()
        self._send("canceled")

    def __enter__(self) -> TaskReporter:
        if self.start_time is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.done:
            return
        if exc is None:
            self.finish()
        elif isinstance(exc, KeyboardInterrupt | GeneratorExit):
            self.cancel()
        else:
            self.fail(exc)
