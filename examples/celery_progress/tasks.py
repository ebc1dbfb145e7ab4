"""A Celery app whose tasks stream their progress through streamer.

Run a worker from this folder (prefork pool: the worker process imports this module, then
forks its pool children)::

    celery -A tasks worker --pool=prefork --concurrency=4

Settings come from the environment:

- ``CELERY_BROKER_URL``: Celery's own broker (default: the local RabbitMQ);
- ``STREAMER_URL``, ``STREAMER_EXCHANGE`` (and any other ``STREAMER_*`` setting): where the
  progress reports go, read by :class:`~streamer.embed.BackgroundPublisher`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from streamer.embed import BackgroundPublisher

LOCAL_BROKER = "amqp://guest:guest@127.0.0.1:5672/"

app = Celery("tasks", broker=os.environ.get("CELERY_BROKER_URL", LOCAL_BROKER))
app.conf.update(
    task_ignore_result=True,  # no result backend: the reports *are* the result
    broker_connection_retry_on_startup=True,
)

# ONE publisher per worker, created at import time, i.e. in the worker's main process before
# the prefork pool forks its children. It opens nothing until its first publish(): each child
# then starts its own loop thread and connection (streamer resets itself after a fork), so no
# socket is ever shared between processes. A child that exits (billiard ends them with
# os._exit) flushes what it holds first, with no signal handler needed here.
pub = BackgroundPublisher()


class RepositoryUnavailable(Exception):
    """The remote repository cannot be synced."""


@app.task(bind=True, name="sync_repository")
def sync_repository(self: Any, repo: str, items: int = 400) -> dict[str, Any]:
    """Simulate syncing ``repo``: fetch its metadata, then download ``items`` content units.

    Reports ``running`` at the start, one ``progress`` per unit (about ``items * 1.1`` reports,
    ~1 s in all) and ``finished`` with the summary, or ``error`` if anything raises.
    """
    with pub.task(self.request.id, task_type="sync", tags=[f"repo:{repo}"]) as task:
        metadata = max(items // 10, 1)
        for n in range(1, metadata + 1):
            time.sleep(0.0002)
            task.progress(n, metadata, step="metadata")

        unit_size = 64 * 1024
        size_total = items * unit_size
        for n in range(1, items + 1):
            time.sleep(0.002)  # "download" one unit
            if repo == "broken" and n > items // 2:
                raise RepositoryUnavailable(f"{repo}: connection reset after {n - 1} units")
            task.progress(n, items, step="content", size_done=n * unit_size, size_total=size_total)

        summary = {"repo": repo, "units": items, "bytes": size_total}
        task.finish(summary)
        return summary
