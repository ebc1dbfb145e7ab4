"""Task bodies run by other processes in the process-end tests (multiprocessing children,
pool workers, Celery and RQ workers import this module by name).

Each publishes one task's whole life and returns normally, without ``flush()`` or
``close()``: what the worker's way of ending does with the reports still held is the test.
"""

from __future__ import annotations

import os

from streamer import BackgroundPublisher, Report

REPORTS = 450  # per task: 449 running, then finished
SHARED: BackgroundPublisher | None = None  # set in a parent before it forks (Celery style)


def publish_task(url: str, exchange: str, task_id: str) -> str:
    """Publish ``REPORTS`` reports of ``task_id`` with the process's shared publisher if its
    parent made one, else a new one; returns ``task_id`` at once (nothing is flushed)."""
    pub = SHARED if SHARED is not None else BackgroundPublisher(url=url, exchange=exchange)
    items = REPORTS - 1
    for done in range(1, items + 1):
        pub.publish(
            Report(
                task_id=task_id,
                state="running",
                worker_name=f"pid-{os.getpid()}",
                progress_report={"content": {"items_done": done, "items_total": items}},
            )
        )
    pub.publish(Report(task_id=task_id, state="finished", worker_name=f"pid-{os.getpid()}"))
    return task_id


def rq_job(task_id: str) -> str:
    """The RQ job: broker and exchange from the worker's environment."""
    return publish_task(os.environ["STREAMER_URL"], os.environ["STREAMER_EXCHANGE"], task_id)
