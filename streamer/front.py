"""The publishing front that :class:`~streamer.Publisher`, :class:`~streamer.BackgroundPublisher`
and the capturing publisher of :mod:`streamer.testing` share (as httpx's clients share a base).

One constructor (how settings are found), one :meth:`Front.task`, and one set of checks on a
report (:func:`~streamer.report.check`, :func:`~streamer.report.encode_stamped`, the routing-key
rules): a worker's test with the capturing publisher fails exactly where production would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, ClassVar, Self

from .report import Report
from .settings import Settings, resolve_settings
from .task import TaskReporter, fingerprint

__all__ = ["BlockingFront", "Front"]


class Front:
    """Settings resolution and ``task()`` for every publisher; subclasses add ``publish``.

    Args:
        url: broker URL, or several for failover (default: settings / ``STREAMER_URL``).
        exchange: topic exchange name (default ``streamer``).
        settings: a complete :class:`~streamer.settings.Settings`; other options then
            must not be given.
        config: a TOML settings file (default ``$STREAMER_CONFIG``).
        options: any other :class:`~streamer.settings.Settings` field.

    Raises:
        ConfigError: an option is unknown or invalid.
        TypeError: both ``settings`` and individual options were given.
    """

    #: The environment settings are read from (None: ``os.environ``).
    _env: ClassVar[Mapping[str, str] | None] = None

    def __init__(
        self,
        url: str | tuple[str, ...] | list[str] | None = None,
        exchange: str | None = None,
        *,
        settings: Settings | None = None,
        config: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        self.settings = resolve_settings(url, exchange, settings, config, options, env=self._env)
        self._setup()

    def _setup(self) -> None:
        """The subclass's own state, built once ``self.settings`` is known."""

    def publish(self, report: Report) -> None:
        raise NotImplementedError

    def task(self, task_id: str, **fields: Any) -> TaskReporter:
        """A :class:`~streamer.task.TaskReporter` publishing one task's reports through here.

        Keyword arguments (``task_type``, ``tags``, ``queue``, ``group_id``, ``worker_name``)
        go into every report; ``worker_name`` defaults to ``<app_id>@<host>:<pid>``.
        ``steps=["metadata", "content"]`` declares the steps ahead: every report lists them
        all (not started until they are), so a view's overall bar is right from the start.
        """
        fields.setdefault("worker_name", fingerprint(self.settings.app_id))
        return TaskReporter(self.publish, task_id, **fields)


class BlockingFront(Front):
    """A front for synchronous code: blocking ``flush``/``close``, a ``with`` block closes."""

    def flush(self, timeout: float | None = None) -> bool:
        raise NotImplementedError

    def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
