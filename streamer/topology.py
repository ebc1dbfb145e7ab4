"""What a consumer declares: queues and their bindings, fedora-messaging style.

Checked before anything connects, so a typo in a ``[[bindings]]`` table is a clear
:class:`~streamer.ConfigError` naming the key, not a broker error on the third reconnect.
The defaults make a viewer drop rather than hoard: an exclusive, auto-deleted queue capped at
10,000 messages whose oldest go first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .errors import ConfigError
from .settings import Settings, read_config

__all__ = [
    "CONSUMER_TABLES",
    "Binding",
    "Queue",
    "consumer_tables",
    "default_queue_arguments",
    "plan",
]

_QUEUE_KEYS: Final = frozenset({"durable", "auto_delete", "exclusive", "arguments"})
_BINDING_KEYS: Final = frozenset({"exchange", "queue", "routing_keys"})
#: Tables of a TOML settings file that describe the consumer, not the settings.
CONSUMER_TABLES: Final = ("bindings", "queues", "qos")


@dataclass(frozen=True, slots=True)
class Queue:
    name: str  # "" asks the broker for a name
    durable: bool
    auto_delete: bool
    exclusive: bool
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Binding:
    exchange: str
    queue: str
    routing_keys: tuple[str, ...]


def default_queue_arguments(max_length: int = 10_000) -> dict[str, Any]:
    """A capped queue whose oldest messages the broker drops: a slow consumer never hoards."""
    return {"x-max-length": max_length, "x-overflow": "drop-head"}


def _refuse_unknown(table: Mapping[str, Any], valid: frozenset[str], what: str) -> None:
    unknown = sorted(set(table) - valid)
    if unknown:
        raise ConfigError(f"{what} {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")


def plan(
    settings: Settings,
    bindings: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    queues: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[list[Queue], list[Binding]]:
    """Check fedora-messaging style ``bindings`` and ``queues`` and fill in the defaults.

    A binding without ``queue`` (or with ``""``) goes to an anonymous, exclusive,
    auto-deleted, length-capped queue; so does the default binding (``<prefix>.#`` on the
    settings' exchange). A named queue must be described in ``queues``.

    Raises:
        ConfigError: an unknown key, a wrong type or a binding to an undeclared queue.
    """
    declared: dict[str, Queue] = {}
    for name, spec in (queues or {}).items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"queue {name!r}: expected a table of options, got {spec!r}")
        _refuse_unknown(spec, _QUEUE_KEYS, f"queue {name!r}: unknown option")
        arguments = spec.get("arguments", {})
        if not isinstance(arguments, Mapping):
            raise ConfigError(f"queue {name!r}: arguments must be a table, got {arguments!r}")
        flags = {}
        for flag, default in (("durable", True), ("auto_delete", False), ("exclusive", False)):
            value = spec.get(flag, default)
            if not isinstance(value, bool):
                raise ConfigError(f"queue {name!r}: {flag} must be true or false, got {value!r}")
            flags[flag] = value
        declared[name] = Queue(name=name, arguments=dict(arguments), **flags)

    if bindings is None:
        raw: list[Mapping[str, Any]] = (
            [] if queues else [{"routing_keys": [f"{settings.routing_prefix}.#"]}]
        )
    elif isinstance(bindings, Mapping):
        raw = [bindings]
    else:
        raw = list(bindings)
    planned = []
    for binding in raw:
        if not isinstance(binding, Mapping):
            raise ConfigError(f"binding {binding!r}: expected a table")
        _refuse_unknown(binding, _BINDING_KEYS, f"binding {dict(binding)!r}: unknown key")
        keys = binding.get("routing_keys", [f"{settings.routing_prefix}.#"])
        keys = [keys] if isinstance(keys, str) else keys
        if not isinstance(keys, Sequence) or not all(isinstance(k, str) for k in keys):
            raise ConfigError(f"binding {dict(binding)!r}: routing_keys must be a list of strings")
        exchange = binding.get("exchange", settings.exchange)
        queue = binding.get("queue", "") or ""
        if not isinstance(exchange, str) or not exchange or not isinstance(queue, str):
            raise ConfigError(f"binding {dict(binding)!r}: exchange and queue must be strings")
        if queue not in declared:
            if queue:
                raise ConfigError(
                    f"binding to queue {queue!r}, which is not in queues; describe it there "
                    "(durable, auto_delete, exclusive, arguments) or leave queue out for an "
                    "anonymous one"
                )
            declared[""] = Queue("", False, True, True, default_queue_arguments())
        planned.append(Binding(exchange, queue, tuple(keys)))
    if not declared:
        raise ConfigError("nothing to consume: give bindings or queues")
    return list(declared.values()), planned


def consumer_tables(
    config: str | os.PathLike[str] | None,
) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None, int | None]:
    """The consumer's own tables of a settings file: ``[[bindings]]``, ``[queues.*]``, ``[qos]``.

    The rest of the file is settings, read by ``load_settings(..., sections=CONSUMER_TABLES)``.

    Returns:
        the bindings, the queues and ``qos.prefetch_count``, each None when absent.

    Raises:
        ConfigError: a table has the wrong shape.
    """
    if config is None:
        return None, None, None
    name = os.fspath(config)
    data = read_config(config)
    bindings = data.get("bindings")
    queues = data.get("queues")
    qos = data.get("qos", {})
    if bindings is not None and not isinstance(bindings, list):
        raise ConfigError(f"config file {name!r}: bindings must be [[bindings]] tables")
    if queues is not None and not isinstance(queues, dict):
        raise ConfigError(f"config file {name!r}: queues must be [queues.<name>] tables")
    if not isinstance(qos, dict) or set(qos) - {"prefetch_count"}:
        raise ConfigError(f"config file {name!r}: [qos] takes prefetch_count only")
    prefetch = qos.get("prefetch_count")
    if prefetch is not None and (not isinstance(prefetch, int) or prefetch < 1):
        raise ConfigError(f"config file {name!r}: prefetch_count must be a positive integer")
    return bindings, queues, prefetch
