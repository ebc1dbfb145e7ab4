"""The web dashboard: every task on the exchange in a browser, live, with /metrics beside it.

The terminal view's sibling (:mod:`streamer.watch`), built the same way: each delivery is
only decoded and folded into a bounded :class:`~streamer.board.Board`, and what the viewers
see is produced from the board on a clock, never per message. Here the clock is the
server-sent-event stream: every ``interval`` seconds (4 times a second by default) the rows of
the tasks that changed since the last batch (a dirty set) go out in one event to every open
page. A burst of thousands of reports per second therefore costs each browser at most four
small updates a second, and a task that sent fifty reports in between is sent once.

A viewer drops rather than queues: the consumer takes deliveries without acknowledgements
(``no_ack``) from an exclusive, length-capped queue, the board and the per-task report history
are bounded, and a page too slow to read its stream is resynchronised from a snapshot instead
of being buffered for.

Every string a task sends is data, never markup: the page writes it with ``textContent`` and
the server forbids inline scripts and styles with a Content-Security-Policy.

Routes: ``/`` (the page), ``/events`` (the stream), ``/tasks/<id>`` (one task and its recent
reports), ``/api/tasks`` and ``/api/tasks/<id>`` (JSON), ``/metrics`` (Prometheus),
``/healthz`` (no authentication: for load balancers and probes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import hmac
import ipaddress
import logging
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final
from urllib.parse import urlencode

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry

from . import metrics
from .board import Board, TaskState
from .consumer import MALFORMED, Consumer, Message
from .errors import ConfigError
from .report import TERMINAL_STATES
from .settings import Settings
from .watch import Counters

__all__ = ["Auth", "Dashboard", "Row", "is_loopback"]

log = logging.getLogger(__name__)

#: Sent with every response: the page loads nothing but its own files and never runs inline
#: code, so a task string that slipped into markup still could not execute.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_STATIC: Final = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
    "format.js": "text/javascript",
    "task.js": "text/javascript",
    "dashboard.html": "text/html",
    "task.html": "text/html",
}
_COOKIE: Final = "streamer_dashboard"
_KEEPALIVE: Final = 15.0  # seconds between SSE comments on a quiet stream (proxies time out)
_SUBSCRIBER_BACKLOG: Final = 8  # batches a page may fall behind before it is resynchronised
_ERROR_TEXT: Final = 200  # characters of an error description shown in a row


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One task as the page and ``/api/tasks`` see it (times are Unix seconds).

    ``progress`` is done/total in 0..1 (1 for a finished task), ``rate`` items per second,
    ``eta`` seconds; each is None when unknown. ``end`` is None while the task is active.
    """

    id: str
    type: str | None
    state: str
    done: int | None
    total: int | None
    progress: float | None
    rate: float | None
    eta: float | None
    start: float
    end: float | None
    seen: float
    worker: str | None
    tags: list[str]
    seq: int
    gaps: int
    error: str | None

    @classmethod
    def of(cls, task: TaskState) -> Row:
        report = task.report
        error = None
        if report.error is not None:
            error = f"{report.error.code}: {report.error.description}"[:_ERROR_TEXT]
        return cls(
            id=task.task_id,
            type=report.task_type,
            state=task.state,
            done=task.done,
            total=task.total,
            progress=task.progress,
            rate=task.rate,
            eta=task.eta,
            start=task.started,
            end=task.ended,
            seen=task.last_seen,
            worker=report.worker_name,
            tags=report.tags,
            seq=report.seq,
            gaps=task.gaps,
            error=error,
        )


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """The header line: what the board holds and how the stream is doing."""

    tasks: int
    by_state: dict[str, int]
    received: int
    rate: float
    malformed: int
    gaps: int
    ignored: int
    evicted: int
    dropped: int
    consuming: bool


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """One server-sent event: changed rows, rows gone from the board, the summary."""

    n: int
    now: float
    rows: list[Row]
    removed: list[str]
    summary: Summary


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One report in a task's recent history (small on purpose: thousands are kept)."""

    at: float  # when it arrived
    seq: int
    state: str
    done: int | None
    total: int | None
    sent_at: float


_encode: Final = msgspec.json.Encoder().encode


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback one (only this machine can connect).

    ``0.0.0.0``, ``::`` and names that resolve to any other address are not loopback.
    """
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


@dataclass(frozen=True, slots=True, repr=False)
class Auth:
    """Credentials a client must present: a bearer token, basic auth, or either.

    A browser gives the token once as ``?token=...``; it is swapped for an HttpOnly cookie
    (holding a digest, not the token) and the address bar is cleaned. API clients send
    ``Authorization: Bearer <token>``. Credentials never appear in ``repr``.
    """

    token: str | None = None
    basic: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.token is None and self.basic is None:
            raise ConfigError("auth needs a token or a user:password")
        if self.token is not None and not self.token:
            raise ConfigError("the dashboard token must not be empty")

    @classmethod
    def parse_basic(cls, value: str) -> tuple[str, str]:
        """``user:password`` as a pair.

        Raises:
            ConfigError: no colon, or an empty user or password.
        """
        user, sep, password = value.partition(":")
        if not sep or not user or not password:
            raise ConfigError("basic auth must be given as user:password (both non-empty)")
        return user, password

    @property
    def cookie(self) -> str:
        """What the session cookie holds: a digest of the token (the token is never stored)."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"streamer dashboard", "sha256").hexdigest()

    def allows(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if self.token is not None:
            if scheme.lower() == "bearer" and _same(value.strip(), self.token):
                return True
            cookie = request.cookies.get(_COOKIE)
            if cookie is not None and _same(cookie, self.cookie):
                return True
        if self.basic is not None and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return _same(user, self.basic[0]) & _same(password, self.basic[1])
        return False

    def describe(self) -> str:
        """What is required, for the start-up line: never the secrets themselves."""
        kinds = []
        if self.token is not None:
            kinds.append("token ***")
        if self.basic is not None:
            kinds.append(f"basic auth {self.basic[0]}:***")
        return " or ".join(kinds)

    def __repr__(self) -> str:
        return f"Auth({self.describe()})"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class _Subscriber:
    """One open page: the batches it has yet to read, or a request to resynchronise it."""

    __slots__ = ("batches", "resync")

    def __init__(self) -> None:
        self.batches: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: stop
        self.resync = False

    def offer(self, data: bytes) -> None:
        if self.resync:
            return  # the snapshot it will get includes this batch
        if self.batches.qsize() >= _SUBSCRIBER_BACKLOG:
            # Too slow to keep up: forget what it missed and send it the board afresh.
            while not self.batches.empty():
                self.batches.get_nowait()
            self.resync = True
            self.batches.put_nowait(b"")
            return
        self.batches.put_nowait(data)


class Phase(enum.Enum):
    INIT = "init"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Dashboard:
    """The web dashboard: a consumer, a bounded board and an aiohttp server, as one object.

    ``async with Dashboard(settings) as dashboard:`` binds the port, starts consuming and
    serving; leaving it (or :meth:`close`) stops both. :attr:`url` is where it listens.

    Args:
        settings: broker and exchange.
        bindings: the consumer's bindings (default: ``<routing_prefix>.#`` on the exchange,
            on an exclusive, auto-deleted, length-capped queue).
        queues: named queues, as for :class:`~streamer.consumer.Consumer` (give them a length
            cap: a viewer should drop, not hoard).
        host, port: where to listen (port 0 picks a free one).
        auth: required credentials; None serves anyone who can connect (loopback only,
            enforced by the command line).
        max_tasks, max_finished: the board's bounds.
        history: recent reports kept per task, for ``/tasks/<id>``.
        history_tasks: tasks whose history is kept (the most recently updated).
        interval: seconds between two batches of the event stream.
        prefetch: deliveries waiting for the board at most (beyond that they are dropped).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bindings: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        queues: Mapping[str, Mapping[str, Any]] | None = None,
        host: str = "127.0.0.1",
        port: int = 8700,
        auth: Auth | None = None,
        max_tasks: int = 10_000,
        max_finished: int = 1_000,
        history: int = 20,
        history_tasks: int = 1_000,
        interval: float = 0.25,
        prefetch: int = 2_000,
    ) -> None:
        if history < 1 or history_tasks < 1:
            raise ConfigError("history and history_tasks must be at least 1")
        if interval <= 0:
            raise ConfigError(f"interval must be positive, got {interval}")
        self.settings = settings
        self.host = host
        self.port = port
        self.auth = auth
        self.interval = interval
        self.board = Board(max_tasks=max_tasks, max_finished=max_finished)
        self.consumer = Consumer(
            self._on_message,
            bindings=bindings,
            queues=queues,
            settings=settings,
            prefetch=prefetch,
            no_ack=True,
        )
        self._history_len = history
        self._history_tasks = history_tasks
        self._history: OrderedDict[str, deque[Entry]] = OrderedDict()
        self._dirty: set[str] = set()
        self._listed: set[str] = set()  # ids some open page may hold
        self._evicted_seen = 0
        self._subscribers: set[_Subscriber] = set()
        self._counters = Counters()
        self._batches = 0
        self._phase = Phase.INIT
        self._consuming: asyncio.Future[int] | None = None
        self._broadcasting: asyncio.Future[None] | None = None
        self._runner: web.AppRunner | None = None
        self._static = {name: _read_static(name) for name in _STATIC}

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def consuming(self) -> asyncio.Event:
        """Set while the dashboard's queue is bound and consumed."""
        return self.consumer.consuming

    async def start(self) -> None:
        """Bind the port, then start consuming and the event stream.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: already started.
        """
        if self._phase is not Phase.INIT:
            raise RuntimeError(f"dashboard cannot start when {self._phase.value}")
        self._phase = Phase.OPEN
        runner = self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await self.close()
            raise
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        self._consuming = asyncio.ensure_future(self.consumer.run())
        self._broadcasting = asyncio.ensure_future(self._broadcast())

    async def wait(self) -> None:
        """Until consuming ends: after :meth:`close`, or raising why the consumer gave up
        (e.g. the broker refused the credentials)."""
        if self._consuming is None:
            raise RuntimeError("dashboard not started")
        await asyncio.shield(self._consuming)

    async def close(self) -> None:
        """Stop consuming and serving; open event streams end (idempotent)."""
        if self._phase in (Phase.CLOSING, Phase.CLOSED):
            return
        self._phase = Phase.CLOSING
        self.consumer.stop()
        for sub in self._subscribers:
            sub.batches.put_nowait(None)
        if self._broadcasting is not None:
            self._broadcasting.cancel()
        for task in (self._consuming, self._broadcasting):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # the consumer's error, if any, was for wait() to raise
        if self._runner is not None:
            await self._runner.cleanup()
        self._phase = Phase.CLOSED

    async def __aenter__(self) -> Dashboard:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        auth = f", {self.auth.describe()}" if self.auth is not None else ""
        return f"<Dashboard {self.url} {self._phase.value}, {len(self.board)} tasks{auth}>"

    # -- receiving ------------------------------------------------------------------------

    async def _on_message(self, message: Message) -> None:
        """Fold one report in: board, history, dirty set. Nothing else runs per message."""
        report = message.report
        now = time.time()
        if not self.board.apply(report, now):
            return
        task_id = report.task_id
        task = self.board.get(task_id)
        if task is None:  # applied, then evicted at once (a board full of active tasks)
            return
        self._dirty.add(task_id)
        history = self._history.get(task_id)
        if history is None:
            history = self._history[task_id] = deque(maxlen=self._history_len)
            if len(self._history) > self._history_tasks:
                self._history.popitem(last=False)
        else:
            self._history.move_to_end(task_id)
        history.append(Entry(now, report.seq, report.state, task.done, task.total, report.sent_at))

    # -- the event stream -----------------------------------------------------------------

    def summary(self) -> Summary:
        board = self.board
        counters = self.consumer.counters
        malformed = sum(counters[kind] for kind in MALFORMED)
        return Summary(
            tasks=len(board),
            by_state=board.by_state(),
            received=board.reports + board.stale + board.duplicates + malformed,
            rate=self._counters.rate,
            malformed=malformed,
            gaps=board.gaps,
            ignored=board.stale + board.duplicates,
            evicted=board.evicted,
            dropped=counters["dropped"],
            consuming=self.consuming.is_set(),
        )

    def _sample(self, now: float) -> None:
        board = self.board
        counters = self.consumer.counters
        self._counters.received = (
            board.reports + board.stale + board.duplicates + sum(counters[k] for k in MALFORMED)
        )
        self._counters.sample(now)

    def _snapshot(self) -> bytes:
        """Every task on the board as one ``snapshot`` event; its ids are now listed."""
        now = time.time()
        rows = [Row.of(task) for task in self.board.recent()]
        self._listed.update(row.id for row in rows)
        batch = Batch(n=self._batches, now=now, rows=rows, removed=[], summary=self.summary())
        return b"event: snapshot\ndata: " + _encode(batch) + b"\n\n"

    def _batch(self, now: float) -> bytes:
        """The rows that changed since the last batch, and the ids that left the board."""
        board = self.board
        rows = []
        for task_id in self._dirty:
            task = board.get(task_id)
            if task is not None:
                rows.append(Row.of(task))
        self._dirty.clear()
        removed: list[str] = []
        if board.evicted != self._evicted_seen:
            self._evicted_seen = board.evicted
            alive = {task.task_id for task in board}
            removed = [task_id for task_id in self._listed if task_id not in alive]
            self._listed.intersection_update(alive)
        self._listed.update(row.id for row in rows)
        self._batches += 1
        batch = Batch(n=self._batches, now=now, rows=rows, removed=removed, summary=self.summary())
        return b"data: " + _encode(batch) + b"\n\n"

    async def _broadcast(self) -> None:
        """Every ``interval``: one batch to every open page (none while nobody watches)."""
        last_summary: Summary | None = None
        while True:
            await asyncio.sleep(self.interval)
            now = time.time()
            self._sample(now)
            if not self._subscribers:
                self._dirty.clear()
                self._listed.clear()
                self._evicted_seen = self.board.evicted
                last_summary = None
                continue
            summary = self.summary()
            # Nothing changed on the board: still send the header when it did change (the
            # rate falling to zero, the broker connection lost).
            if (
                not self._dirty
                and self.board.evicted == self._evicted_seen
                and summary == last_summary
            ):
                continue
            last_summary = summary
            data = self._batch(now)
            for sub in self._subscribers:
                sub.offer(data)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        sub = _Subscriber()
        snapshot = self._snapshot()  # taken and subscribed with no await in between
        self._subscribers.add(sub)
        try:
            await response.write(b"retry: 1000\n" + snapshot)
            while True:
                try:
                    async with asyncio.timeout(_KEEPALIVE):
                        data = await sub.batches.get()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if data is None:
                    break
                if not data:  # fell behind: start again from the board as it is now
                    sub.resync = False
                    data = self._snapshot()
                await response.write(data)
        except ConnectionError:
            pass  # the page went away
        finally:
            self._subscribers.discard(sub)
        return response

    # -- the web app ----------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (routes, authentication, security headers)."""
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(_secure)
        app.router.add_get("/", self._page("dashboard.html"))
        app.router.add_get("/tasks/{task_id:.+}", self._page("task.html"))
        app.router.add_get("/static/{name}", self._asset)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/tasks", self._api_tasks)
        app.router.add_get("/api/tasks/{task_id:.+}", self._api_task)
        registry = CollectorRegistry()
        registry.register(metrics.BoardCollector(self.board, self.consumer.counters))
        app.router.add_get("/metrics", metrics.handler(registry))
        app.router.add_get("/healthz", self._healthz)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = self.auth
        if auth is None or request.path == "/healthz":
            return await handler(request)  # type: ignore[no-any-return]
        if auth.token is not None and "token" in request.query and request.method == "GET":
            if _same(request.query["token"], auth.token):
                rest = {k: v for k, v in request.query.items() if k != "token"}
                location = request.path + (f"?{urlencode(rest)}" if rest else "")
                response = web.Response(status=303, headers={"Location": location})
                response.set_cookie(
                    _COOKIE, auth.cookie, httponly=True, samesite="Strict", path="/"
                )
                return response
        elif auth.allows(request):
            return await handler(request)  # type: ignore[no-any-return]
        challenge = 'Basic realm="streamer", charset="UTF-8"' if auth.basic else "Bearer"
        return web.Response(
            status=401, text="authentication required\n", headers={"WWW-Authenticate": challenge}
        )

    def _page(self, name: str) -> Any:
        async def page(request: web.Request) -> web.Response:
            return web.Response(body=self._static[name], content_type="text/html", charset="utf-8")

        return page

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC or name.endswith(".html"):
            raise web.HTTPNotFound()
        content_type = _STATIC[name]
        charset = None if content_type.startswith("image/") else "utf-8"
        return web.Response(body=self._static[name], content_type=content_type, charset=charset)

    async def _api_tasks(self, request: web.Request) -> web.Response:
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
        for task in self.board.recent():
            if states and not _state_matches(task.state, states):
                continue
            report = task.report
            if tag is not None and tag not in report.tags:
                continue
            if text and not _text_matches(task, text):
                continue
            rows.append(Row.of(task))
            if limit is not None and len(rows) >= limit:
                break
        now = time.time()
        body = {"now": now, "summary": self.summary(), "tasks": rows}
        return web.Response(body=_encode(body), content_type="application/json")

    async def _api_task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        task = self.board.get(task_id)
        if task is None:
            missing = {"error": "no such task on the board (never seen, or evicted)"}
            return web.Response(status=404, body=_encode(missing), content_type="application/json")
        history = self._history.get(task_id, ())
        body: dict[str, Any] = {
            "now": time.time(),
            "task": Row.of(task),
            "report": task.report,
            "history": [
                {
                    "at": e.at,
                    "seq": e.seq,
                    "state": e.state,
                    "done": e.done,
                    "total": e.total,
                    "latency": max(e.at - e.sent_at, 0.0) if e.sent_at else None,
                }
                for e in history
            ],
        }
        return web.Response(body=_encode(body), content_type="application/json")

    async def _healthz(self, request: web.Request) -> web.Response:
        consuming = self.consuming.is_set()
        body = {
            "status": "ok" if consuming else "connecting",
            "consuming": consuming,
            "tasks": len(self.board),
            "viewers": len(self._subscribers),
        }
        return web.Response(
            status=200 if consuming else 503, body=_encode(body), content_type="application/json"
        )


def _state_matches(state: str, wanted: set[str]) -> bool:
    if state in wanted:
        return True
    ended = state in TERMINAL_STATES
    return ("ended" in wanted and ended) or ("active" in wanted and not ended)


def _text_matches(task: TaskState, text: str) -> bool:
    report = task.report
    fields = (task.task_id, report.task_type or "", report.worker_name or "", *report.tags)
    return any(text in value.lower() for value in fields)


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def _read_static(name: str) -> bytes:
    return (resources.files("streamer") / "static" / name).read_bytes()
