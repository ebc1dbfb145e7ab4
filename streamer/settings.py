"""Settings: one frozen value object, filled from defaults < TOML file < env < arguments.

Every knob of the publisher lives here so that a file, ``STREAMER_*`` variables and code all
speak the same names. Passwords never leave this module unmasked: ``repr`` and every error
message go through :func:`mask_url`.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Collection, Mapping
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec

from .errors import ConfigError

__all__ = [
    "DEFAULT_URL",
    "Settings",
    "load_settings",
    "mask_url",
    "read_config",
    "replace_host",
    "resolve_settings",
]

DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
ENV_PREFIX: Final = "STREAMER_"
# Variables that configure how settings are found rather than being settings themselves.
# STREAMER_* variables that are not publisher settings: the config file, the dashboard's
# credentials (read by the dashboard command only).
_ENV_NOT_SETTINGS: Final = frozenset(
    {"STREAMER_CONFIG", "STREAMER_DASHBOARD_TOKEN", "STREAMER_DASHBOARD_BASIC_AUTH"}
)


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log or show)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def replace_host(url: str, host: str | None, port: int | None) -> str:
    """``url`` with its host and/or port replaced (user, password, vhost and query kept)."""
    parts = urlsplit(url)
    name = host if host is not None else parts.hostname or "localhost"
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"  # an IPv6 address
    new_port = port if port is not None else parts.port
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = (f"{userinfo}@" if userinfo else "") + name + (f":{new_port}" if new_port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a publisher connects and how hard it tries.

    Attributes:
        url: broker URL, or several (tried in order for failover); ``amqp://`` or ``amqps://``.
        exchange: topic exchange the reports go to; declared (durable topic) when missing.
        routing_prefix: first word of every routing key (``<prefix>.<task_id>``).
        connection_name: shown by the broker for our connections (default:
            ``streamer <host>:<pid>``).
        connections: TCP connections in the pool.
        channels: confirm-mode channels per connection; a task always uses the same one.
        confirm_window: unconfirmed publishes allowed per channel.
        max_pending: reports held at most (waiting to be written plus awaiting confirms).
        max_body: largest report body accepted, in bytes.
        max_tasks: tasks remembered (sequence numbers, latest report for resend) at most.
        connect_timeout: seconds a connection attempt may take.
        heartbeat: AMQP heartbeat interval in seconds (0 disables; a dead peer is noticed
            after two silent intervals).
        reconnect_min: first reconnect delay in seconds (doubles, jittered, up to reconnect_max).
        reconnect_max: longest reconnect delay in seconds (each wait is jittered between half
            of it and all of it, so a broker that comes back is found within about a second).
        close_timeout: seconds ``close()`` waits for pending confirms before dropping them.
        mandatory: ask the broker to return unroutable reports (counted as dropped, ``returned``).
        headers: also send ``task_id``, ``state``, ``seq``, ``host`` and ``pid`` as an AMQP
            header table, for consumers that filter with a headers exchange. Off by default:
            a header table makes RabbitMQ decode every property of every message, which costs
            it about 28% more CPU per report (the task id and state are always in the
            ``correlation_id`` and ``type`` properties anyway).
        app_id: name of the sending application; the ``app_id`` property carries it with the
            sender's host and pid (``<app_id>@<host>:<pid>``).
        ca_file: CA bundle for ``amqps://`` (default: the system's trust store).
        cert_file: a client certificate (PEM) to present on ``amqps://`` connections. With
            no password in the URL, streamer logs in with it (SASL ``EXTERNAL``: the broker
            needs the ``rabbitmq_auth_mechanism_ssl`` plugin); with one, it logs in with the
            password and the certificate only secures the link.
        key_file: the certificate's private key, when it is not in ``cert_file``.
        metrics_port: serve this publisher's Prometheus metrics on
            ``http://<metrics_host>:<metrics_port>/metrics`` (default: not served; 0 picks a
            free port). See :mod:`streamer.metrics`.
        metrics_host: address the metrics endpoint binds (default loopback only).
        max_seq_jump: for the viewing tools: a report whose ``seq`` is further than this from
            its task's last one is counted as a sequence jump and starts the task's sequence
            afresh, instead of counting a million gaps or making the genuine reports that
            follow look stale (a foreign publisher, a restarted one).
        stall_after: for the viewing tools: seconds without a report after which an active
            task shows as stalled (a worker that died mid-task), at least; a task that
            reports slowly gets 10 times its usual interval between reports.
        history_max_age: keep a history of the exchange this long (``"1h"``, ``"7d"``): the
            receiving commands (dashboard, watch, listen) declare it when they start, as
            ``streamer history enable`` does (:mod:`streamer.history`). Default: none.
        history_max_bytes: the history's size cap (``"1GB"``); the oldest go first.
    """

    url: str | tuple[str, ...] = DEFAULT_URL
    exchange: str = "streamer"
    routing_prefix: str = "tasks"
    connection_name: str = ""
    connections: int = 1
    channels: int = 1
    confirm_window: int = 1000
    max_pending: int = 10_000
    max_body: int = 128 * 1024
    max_tasks: int = 100_000
    connect_timeout: float = 5.0
    heartbeat: int = 30
    reconnect_min: float = 0.1
    reconnect_max: float = 1.0
    close_timeout: float = 5.0
    mandatory: bool = False
    headers: bool = False
    app_id: str = "streamer"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    max_seq_jump: int = 1_000_000
    stall_after: float = 30.0
    history_max_age: str | None = None
    history_max_bytes: str | int = "1GB"

    def __post_init__(self) -> None:
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
                raise ConfigError(
                    f"url {mask_url(url)!r} is not a broker URL; expected "
                    "amqp://user:password@host:port/vhost or amqps://..."
                )
            try:
                parts.port  # noqa: B018 - parsing the port validates it
            except ValueError as exc:
                raise ConfigError(f"url {mask_url(url)!r}: {exc}") from None
        for name in (
            "connections",
            "channels",
            "confirm_window",
            "max_pending",
            "max_body",
            "max_tasks",
            "max_seq_jump",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "connect_timeout",
            "reconnect_min",
            "reconnect_max",
            "close_timeout",
            "stall_after",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.heartbeat < 0:
            raise ConfigError(f"heartbeat must be 0 (off) or positive, got {self.heartbeat}")
        if not self.exchange:
            raise ConfigError("exchange must not be empty")
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("key_file is the key of cert_file: give cert_file too")
        if self.cert_file is not None and any(not u.startswith("amqps:") for u in self.urls):
            raise ConfigError("cert_file is for amqps:// URLs only (a certificate needs TLS)")
        from .history import parse_duration, parse_size  # (it needs this module)

        if self.history_max_age is not None:
            parse_duration(self.history_max_age, "history_max_age")
        parse_size(self.history_max_bytes, "history_max_bytes")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be 0..65535, got {self.metrics_port}")

    @property
    def urls(self) -> tuple[str, ...]:
        """The broker URLs in failover order."""
        return (self.url,) if isinstance(self.url, str) else tuple(self.url)

    @property
    def client_name(self) -> str:
        """The connection name the broker shows (``connection_name`` or a fingerprint)."""
        return self.connection_name or f"streamer {socket.gethostname()}:{os.getpid()}"

    def __repr__(self) -> str:
        fields = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "url":
                value = tuple(mask_url(u) for u in self.urls)
                value = value[0] if len(value) == 1 else value
            fields.append(f"{name}={value!r}")
        return f"Settings({', '.join(fields)})"

    __str__ = __repr__


FIELDS: Final = frozenset(Settings.__struct_fields__)


def _check_keys(keys: object, source: str) -> None:
    unknown = sorted(set(keys) - FIELDS)  # type: ignore[call-overload]
    if unknown:
        raise ConfigError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in {source}; "
            f"valid settings: {', '.join(sorted(FIELDS))}"
        )


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var in _ENV_NOT_SETTINGS:
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name not in FIELDS:
            _check_keys([name], f"environment variable {var}")
        if name == "url":
            urls = tuple(u for u in raw.replace(",", " ").split() if u)
            values[name] = urls[0] if len(urls) == 1 else urls
        else:
            values[name] = raw
    return values


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML config file: settings plus any tables other components own.

    Raises:
        ConfigError: the file is missing, unreadable or not TOML.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {os.fspath(path)!r} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {os.fspath(path)!r} cannot be read: {exc}") from None


def _read_file(path: str | os.PathLike[str], sections: Collection[str]) -> dict[str, Any]:
    data = {k: v for k, v in read_config(path).items() if k not in sections}
    _check_keys(data, f"config file {os.fspath(path)!r}")
    return data


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    sections: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from defaults < TOML file < ``STREAMER_*`` env < ``overrides``.

    Args:
        config: a TOML file of settings; defaults to ``$STREAMER_CONFIG`` when set.
        env: the environment to read (default ``os.environ``).
        sections: top-level names in the file that belong to someone else (e.g. the
            consumer's ``bindings``, ``queues`` and ``qos`` tables), skipped here.
        defaults: the caller's own defaults, in place of :class:`Settings`' (the load
            harness's one publisher, which stands for many workers, sizes its window so);
            the file, the environment and ``overrides`` still set any of them.
        overrides: explicit values; ``None`` means "not given" so CLI flags can pass through.

    Raises:
        ConfigError: unknown name, wrong type or invalid value, naming the setting and its
            source.
    """
    env = os.environ if env is None else env
    config = config if config is not None else env.get("STREAMER_CONFIG") or None
    layers: list[tuple[str, dict[str, Any], bool]] = []
    if defaults:
        _check_keys(defaults, "defaults")
        layers.append(("defaults", dict(defaults), True))
    if config is not None:
        layers.append((f"config file {os.fspath(config)!r}", _read_file(config, sections), True))
    layers.append(("environment", _from_env(env), False))
    given = {k: v for k, v in overrides.items() if v is not None}
    _check_keys(given, "arguments")
    layers.append(("arguments", given, True))

    merged: dict[str, Any] = {}
    for source, values, strict in layers:
        for name, value in values.items():
            try:
                msgspec.convert({name: value}, Settings, strict=strict)
            except msgspec.ValidationError as exc:
                shown = _masked(value) if name == "url" else value
                raise ConfigError(
                    f"setting {name}={shown!r} from {source}: {_reason(exc)}"
                ) from None
            except ConfigError:
                pass  # value is fine on its own; whole-object checks run below
            merged[name] = value
    try:
        return msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid settings: {_reason(exc)}") from None


def resolve_settings(
    url: str | tuple[str, ...] | list[str] | None,
    exchange: str | None,
    settings: Settings | None,
    config: str | os.PathLike[str] | None,
    options: dict[str, Any],
    *,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """The settings a publisher was given: a complete ``settings`` or the pieces of one.

    ``env`` is the environment to read (default ``os.environ``; ``{}`` ignores it).

    Raises:
        TypeError: both ``settings`` and individual options were given.
        ConfigError: see :func:`load_settings`.
    """
    if settings is None:
        if isinstance(url, list):
            url = tuple(url)
        return load_settings(config, env=env, url=url, exchange=exchange, **options)
    if url is not None or exchange is not None or options or config is not None:
        raise TypeError("pass either settings= or individual options, not both")
    return settings


def _masked(url: object) -> object:
    """A url setting (one URL or several) with every password masked, for error messages."""
    if isinstance(url, str):
        return mask_url(url)
    if isinstance(url, list | tuple):
        return type(url)(_masked(u) for u in url)
    return url


def _reason(exc: msgspec.ValidationError) -> str:
    return str(exc).split(" - at ")[0]
