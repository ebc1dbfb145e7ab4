"""The dashboard as one object: a consumer folding reports into a bounded board, and the
aiohttp application that shows it (pages, event stream, API, ``/metrics``, ``/healthz``).

The terminal view's sibling (:mod:`streamer.watch`), built the same way: each delivery is only
decoded and folded into the board, and what viewers see is produced from the board on a clock
(:mod:`.stream`), never per message. Reports come through the fast receiver
(:mod:`streamer.receiver`) in batches, without acknowledgements (``no_ack``), from an
exclusive, length-capped queue; the board and the per-task history are bounded: a viewer
drops rather than queues (a report the broker dropped from the full queue shows as a gap).

Every string a task sends is data, never markup: the page writes it with ``textContent`` and
the server forbids inline scripts and styles with a Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry

from ..amqp import Delivery, Status
from ..board import Board
from ..errors import ConfigError
from ..history import Replay, Since, replay_for
from ..metrics import BoardCollector, handler
from ..receiver import VIEW_GATHER, Receiver, ReportReader
from ..settings import Settings
from ..view import RateWindow
from .api import TaskApi
from .auth import Auth, guard
from .rows import ConnectionRow, Entry, Summary, encode
from .stream import EventStream

__all__ = ["Dashboard"]

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
#: Seconds between two looks at the steps of the tasks that reported (a step change starts a
#: new run in a task's history). Reading a task's progress costs more than folding a report:
#: looking at 1,000 busy tasks every interval (4 times a second) cost the dashboard about a
#: fifth of its CPU at 16,000 reports/s.
STEP_LOOK: Final = 1.0
_STATIC: Final = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
    "format.js": "text/javascript",
    "task.js": "text/javascript",
    "dashboard.html": "text/html",
    "task.html": "text/html",
}


class Phase(enum.Enum):
    INIT = "init"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Dashboard:
    """The web dashboard: a consumer, a bounded board and an aiohttp server, as one object.

    ``async with Dashboard(settings) as dashboard:`` binds the port, starts consuming and
    serving; leaving it (or :meth:`close`) stops both. :attr:`url` is where it listens.

    Routes: ``/`` (the page), ``/events`` (the stream), ``/tasks/<id>`` (one task and its
    recent reports), ``/api/tasks``, ``/api/tasks/<id>`` and ``/api/groups`` (JSON), ``/metrics``
    (Prometheus), ``/healthz`` (no authentication: for load balancers and probes).

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
        history: entries kept per task, for ``/tasks/<id>``: one per run of reports in the
            same state (a state change starts the next).
        history_tasks: tasks whose history is kept (the most recently updated).
        interval: seconds between two batches of the event stream.
        prefetch: the broker's flow-control window for the receiver's queue.
        since: read the exchange's history from there first (:mod:`streamer.history`),
            then go on live from the same stream.
        replay: without ``since``, read the whole history first when the exchange keeps
            one, so a restarted dashboard shows what it showed before (not with ``queues``,
            which say what to read).
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
        since: Since | None = None,
        replay: bool = True,
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
        self.board = Board(
            max_tasks=max_tasks,
            max_finished=max_finished,
            max_seq_jump=settings.max_seq_jump,
            stall_after=settings.stall_after,
        )
        self.reader = ReportReader(settings.max_body)
        self.receiver = Receiver(
            self._on_batch,
            settings=settings,
            bindings=bindings,
            queues=queues,
            prefetch=prefetch,
            no_ack=True,
            what="dashboard",
            gather=VIEW_GATHER,
        )
        self._source = self.receiver.describe()
        if since is not None and queues:
            raise ConfigError("since reads the exchange's history; it cannot read named queues")
        self._since, self._by_default = since, replay and not queues
        self._keys = [
            key
            for binding in self.receiver.bindings
            if binding.exchange == settings.exchange
            for key in binding.routing_keys
        ]
        self._replay: Replay | None = None
        self._probe: asyncio.Future[Replay | None] | None = None
        self._replayed = ""  # the page's note on what was replayed
        self._changed: set[str] = set()  # tasks that reported since the last look
        self._looked = 0.0  # when the steps were last looked at
        self._next_step: dict[str, str] = {}  # tasks whose step changed: their next run's
        self._history_len = history
        self._history_tasks = history_tasks
        self._history: OrderedDict[str, deque[Entry]] = OrderedDict()
        self._rate_window = RateWindow()
        self._rate = 0.0
        self.stream = EventStream(self.board, self.summary, interval, self._sample)
        self._phase = Phase.INIT
        self._consuming: asyncio.Future[None] | None = None
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
        return self.receiver.consuming

    @property
    def status(self) -> Status:
        """The broker connection's state (connected, or why not and since when)."""
        return self.receiver.status

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
        self._consuming = asyncio.ensure_future(self._receive())
        self._broadcasting = asyncio.ensure_future(self.stream.run())

    async def _receive(self) -> None:
        """Read the history first (if any, or asked for), then live."""
        self._probe = asyncio.ensure_future(
            replay_for(
                self.settings,
                self._since,
                self._keys,
                by_default=self._by_default,
                status=self.receiver.status,
            )
        )
        replay = await self._probe  # (waits for a broker that does not answer yet)
        if replay is not None:
            self.receiver.read_stream(replay.stream, replay.since.offset)
            self._source = self.receiver.describe()
            self._replayed = f"{replay.stream} from {replay.since.text}"
            self._replay = replay
        await self.receiver.run()

    async def wait(self) -> None:
        """Until receiving ends: after :meth:`close`, or raising why the receiver gave up
        (e.g. the broker refused the credentials)."""
        if self._consuming is None:
            raise RuntimeError("dashboard not started")
        await asyncio.shield(self._consuming)

    async def close(self) -> None:
        """Stop consuming and serving; open event streams end (idempotent)."""
        if self._phase in (Phase.CLOSING, Phase.CLOSED):
            return
        self._phase = Phase.CLOSING
        if self._probe is not None:
            self._probe.cancel()
        self.receiver.stop()
        self.stream.close()
        if self._broadcasting is not None:
            self._broadcasting.cancel()
        for task in (self._consuming, self._broadcasting):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # the receiver's error, if any, was for wait() to raise
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

    def _on_batch(self, deliveries: list[Delivery]) -> None:
        """Fold a batch in: board, history, dirty set. Nothing else runs per report."""
        now = at = time.time()
        board, stream, histories = self.board, self.stream, self._history
        changed, next_step = self._changed, self._next_step
        replay = self._replay
        watched = stream.watched  # (rows are sent to open pages only)
        for key, _, report in self.reader(deliveries):
            if replay is None:
                task = board.apply(report, now)
            else:
                found = replay.when(key, report, now)
                if found is None:
                    continue
                at = found  # history: folded as it was then
                task = board.apply(report, at, replayed=at != now)
            if task is None:  # stale or repeated: ignored (or not kept)
                continue
            task_id = report.task_id
            if watched:
                stream.touch(task_id)
            history = histories.get(task_id)
            if history is None:
                history = histories[task_id] = deque(maxlen=self._history_len)
                if len(histories) > self._history_tasks:
                    histories.popitem(last=False)
            else:
                histories.move_to_end(task_id)
            seq, state = report.seq, report.state
            step = next_step.pop(task_id, None) if next_step else None
            last = history[-1] if history else None
            if last is not None and last.state == state and step is None:  # the same run
                last.at, last.seq, last.sent_at = at, seq, report.sent_at
                last.reports += 1
            else:  # a new run: a new state, or the step changed when we last looked
                if step is None:
                    step = task.step  # read progress: once per run, not per report
                history.append(Entry(at, at, seq, seq, state, 1, report.sent_at, step))
            changed.add(task_id)

    def _received(self) -> tuple[int, int]:
        """Messages received (malformed ones included) and how many of them were malformed."""
        return self.receiver.received, self.reader.malformed.total

    def _sample(self, now: float) -> None:
        """Every interval: the rate; every :data:`STEP_LOOK` s, the step changes of the
        tasks that reported."""
        self._rate = self._rate_window.sample(now, self._received()[0])
        if now - self._looked < STEP_LOOK:
            return
        self._looked = now
        board, histories = self.board, self._history
        next_step = self._next_step
        if self._replay is not None and not self._replay.caught_up:
            self._changed.clear()  # replaying: a task's runs are noted by state, not by step
            return
        for task_id in self._changed:
            task, history = board.get(task_id), histories.get(task_id)
            if task is not None and history and not task.finished:  # (no report will follow)
                step = task.step
                if step != history[-1].step:  # its next report starts a run in that step
                    next_step[task_id] = step
        self._changed.clear()
        if len(next_step) > self._history_tasks:  # tasks that went silent or left the board
            self._next_step = {k: v for k, v in next_step.items() if k in histories}

    def summary(self) -> Summary:
        """The header: what the board holds and how the stream is doing."""
        board = self.board
        received, malformed = self._received()
        return Summary(
            tasks=len(board),
            by_state=board.by_state(),
            received=received,
            rate=self._rate,
            malformed=malformed,
            gaps=board.gaps,
            ignored=board.stale + board.duplicates,
            evicted=board.evicted,
            consuming=self.consuming.is_set(),
            stalled=board.count_stalled(),
            source=self._source,
            replaying=self._replay.progress(self.receiver.offset) if self._replay else None,
            history=self._replayed,
            connection=ConnectionRow.of(self.receiver.status),
        )

    # -- the web app ----------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (routes, authentication, security headers)."""
        app = web.Application(middlewares=[guard(self.auth)])
        app.on_response_prepare.append(_secure)
        api = TaskApi(self.board, self._history, self.summary)
        app.router.add_get("/", self._page("dashboard.html"))
        app.router.add_get("/tasks/{task_id:.+}", self._page("task.html"))
        app.router.add_get("/static/{name}", self._asset)
        app.router.add_get("/events", self.stream.handle)
        app.router.add_get("/api/tasks", api.tasks)
        app.router.add_get("/api/tasks/{task_id:.+}", api.task)
        app.router.add_get("/api/groups", api.groups)
        registry = CollectorRegistry()
        registry.register(BoardCollector(self.board, self.reader.malformed.counts))
        app.router.add_get("/metrics", handler(registry))
        app.router.add_get("/healthz", self._healthz)
        return app

    def _page(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
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

    async def _healthz(self, request: web.Request) -> web.Response:
        consuming = self.consuming.is_set()
        body = {
            "status": "ok" if consuming else "connecting",
            "consuming": consuming,
            "tasks": len(self.board),
            "viewers": self.stream.viewers,
        }
        return web.Response(
            status=200 if consuming else 503, body=encode(body), content_type="application/json"
        )


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def _read_static(name: str) -> bytes:
    return (resources.files("streamer.dashboard") / "static" / name).read_bytes()
