"""Consumer callbacks: how one is found (``module:object``) and how its ending is read.

fedora-messaging's contract: returning acks the message, raising :class:`~streamer.Nack`
requeues it, :class:`~streamer.Drop` rejects it, :class:`~streamer.HaltConsumer` stops the
consumer; anything else is a failure, logged, and the message rejected (a poison message must
not loop).
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any, NamedTuple, cast

from .errors import ConfigError, Drop, HaltConsumer, Nack
from .message import Message

__all__ = ["Callback", "Outcome", "Verdict", "dispatch", "import_callback", "resolve_callback"]

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    """What to do with a message once the callback is done with it."""

    ACK = "acked"
    NACK = "nacked"
    DROP = "dropped"
    FAIL = "failed"


Callback = Callable[[Message], Any]


def resolve_callback(callback: Any) -> Callback:
    """A class is instantiated once (one-time set-up, state across calls); a callable is kept.

    Raises:
        ConfigError: the object is not callable, or the class cannot be instantiated.
    """
    if isinstance(callback, type):
        try:
            callback = callback()
        except Exception as exc:
            raise ConfigError(f"callback class {callback.__name__} failed to start: {exc}") from exc
    if not callable(callback):
        raise ConfigError(f"callback {callback!r} is not callable")
    return cast(Callback, callback)


def import_callback(path: str) -> Any:
    """Import ``package.module:object`` (the object may be dotted: ``module:Class.method``).

    Raises:
        ConfigError: the path is malformed, the module cannot be imported or lacks the object.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"callback {path!r} must look like package.module:object")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # a broken module raises anything at import time
        raise ConfigError(f"cannot import callback module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"callback {path!r} is not callable")
    return obj


def _is_async(callback: Callback) -> bool:
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 - instances with an async __call__
    )


class Outcome(NamedTuple):
    """How a callback ended: the verdict, plus the halt or the failure, if any."""

    verdict: Verdict
    halt: HaltConsumer | None = None
    error: Exception | None = None


async def dispatch(callback: Callback, message: Message) -> Outcome:
    """Run the callback on one message and turn how it ended into a verdict.

    Sync callbacks run in a worker thread so that heartbeats keep flowing while they work;
    async ones are awaited. ``HaltConsumer`` is returned (with ACK, or NACK when it asks for
    a requeue) rather than raised, so the message is settled before the consumer stops.
    """
    try:
        if _is_async(callback):
            await callback(message)
        else:
            result = await asyncio.to_thread(callback, message)
            if inspect.isawaitable(result):  # e.g. a functools.partial of a coroutine function
                await result
    except Nack:
        return Outcome(Verdict.NACK)
    except Drop:
        return Outcome(Verdict.DROP)
    except HaltConsumer as halt:
        return Outcome(Verdict.NACK if halt.requeue else Verdict.ACK, halt)
    except Exception as exc:
        log.exception(
            "callback failed on %s (seq %d); message rejected, not requeued",
            message.routing_key,
            message.report.seq,
        )
        return Outcome(Verdict.FAIL, error=exc)
    return Outcome(Verdict.ACK)
