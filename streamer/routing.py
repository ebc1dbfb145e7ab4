"""Routing keys: ``<prefix>.<task_id>`` and what makes a task id usable in one."""

from __future__ import annotations

import re
from typing import Final

from .errors import InvalidReport

__all__ = ["MAX_KEY_BYTES", "TopicFilter", "routing_key"]

MAX_KEY_BYTES: Final = 255
_FORBIDDEN: Final = re.compile(r"[.*#\s]")


def routing_key(task_id: object, prefix: str = "tasks") -> str:
    """Return the routing key for a task, refusing ids that would break topic matching.

    A ``.`` would split the id into several words, ``*`` and ``#`` are wildcards for
    consumers, whitespace is invisible in logs; AMQP caps a key at 255 bytes.

    Raises:
        InvalidReport: the id is not a non-empty string usable as one key segment.
    """
    if not isinstance(task_id, str):
        raise InvalidReport(f"task_id must be a string, got {type(task_id).__name__}")
    if not task_id:
        raise InvalidReport("task_id must not be empty")
    bad = _FORBIDDEN.search(task_id)
    if bad is not None:
        raise InvalidReport(
            f"task_id {task_id!r} contains {bad.group()!r}; '.', '*', '#' and whitespace "
            "are not allowed in a routing-key segment"
        )
    key = f"{prefix}.{task_id}" if prefix else task_id
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidReport(f"task_id {task_id!r} is not valid UTF-8 text: {exc.reason}") from None
    if size > MAX_KEY_BYTES:
        raise InvalidReport(
            f"routing key for task_id {task_id[:40]!r}... is {size} bytes; AMQP allows "
            f"{MAX_KEY_BYTES}"
        )
    return key


class TopicFilter:
    """Topic-exchange matching on our side: for reading a stream that holds every key (the
    history) as if through bindings. ``*`` is one word, ``#`` any number of words (none too).

    Matching is by word, and each key's answer is remembered (keys repeat: a task sends
    hundreds of reports), so a report costs one dictionary look-up.
    """

    __slots__ = ("_known", "_patterns", "everything")

    _MAX_KNOWN: Final = 100_000

    def __init__(self, patterns: list[str] | tuple[str, ...]) -> None:
        self._patterns = [tuple(p.split(".")) for p in patterns]
        #: Whether every key matches (``#`` alone): then there is nothing to check.
        self.everything = any(p == ("#",) for p in self._patterns)
        self._known: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        found = self._known.get(key)
        if found is None:
            words = tuple(key.split("."))
            found = any(_match(p, words) for p in self._patterns)
            if len(self._known) >= self._MAX_KNOWN:
                self._known.clear()
            self._known[key] = found
        return found


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    """Whether ``words`` match ``pattern`` (words of a binding key)."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and (head == "*" or head == words[0]) and _match(rest, words[1:])
