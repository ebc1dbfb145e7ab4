"""Prometheus metrics: a closed, documented set of names read from publishers and boards.

Nothing is counted twice: the collectors read a publisher's :class:`~streamer.stats.Stats` and a
:class:`~streamer.board.Board` when Prometheus scrapes, so the publish and fold paths pay nothing
for metrics. The Grafana dashboard in ``grafana/`` depends on these names; change them only
together with it.

Publisher side (:class:`PublisherCollector`):

=============================================  =========  ==========================================
``streamer_reports_published_total``           counter    reports handed to ``publish()``
``streamer_reports_confirmed_total``           counter    reports the broker confirmed
``streamer_reports_coalesced_total``           counter    reports superseded by a newer one of their
                                                          task before being sent
``streamer_reports_dropped_total{reason}``     counter    reports dropped, by reason
                                                          (:data:`~streamer.stats.DROP_REASONS`)
``streamer_reports_pending``                   gauge      reports held or awaiting a confirm
``streamer_reports_resent_total``              counter    latest reports re-sent after a reconnect
``streamer_confirm_latency_seconds``           histogram  write to broker confirm
``streamer_connections_open``                  gauge      AMQP connections up
``streamer_channels_open``                     gauge      confirm channels up
``streamer_reconnects_total``                  counter    connections re-established
=============================================  =========  ==========================================

``published == confirmed + coalesced + dropped + pending`` holds in every scrape.

Board side (:class:`BoardCollector`):

=============================================  =========  ==========================================
``streamer_board_tasks{state}``                gauge      tasks on the board by state
``streamer_received_reports_total``            counter    well-formed reports received
``streamer_received_ignored_total{reason}``    counter    received but ignored: ``stale`` or
                                                          ``duplicate`` (by ``seq``)
``streamer_received_malformed_total{kind}``    counter    malformed messages, by kind
                                                          (:data:`~streamer.consumer.MALFORMED`)
``streamer_board_gaps``                        gauge      reports known missing (``seq`` gaps) over
                                                          the tasks on the board
``streamer_board_stalled_tasks``               gauge      active tasks silent beyond the stall
                                                          bound: max(``stall_after``, 10 x their
                                                          usual interval between reports)
``streamer_received_seq_jumps_total``          counter    reports whose ``seq`` jumped more than
                                                          ``max_seq_jump`` (sequence restarted)
``streamer_received_clock_skew_total``         counter    reports whose latency would be outside
                                                          [0, 1 h] (not observed)
``streamer_board_evicted_total``               counter    tasks evicted to bound memory
``streamer_end_to_end_latency_seconds``        histogram  ``sent_at`` to received, within [0, 1 h]
``streamer_task_progress_ratio{task_id}``      gauge      done/total of active tasks, at most
                                                          ``max_task_series`` of them (the most
                                                          recently updated)
=============================================  =========  ==========================================
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from .message import MALFORMED
from .report import STATES
from .stats import DROP_REASONS, LatencyHistogram, Stats

if TYPE_CHECKING:
    from .board import Board

__all__ = [
    "METRIC_NAMES",
    "BoardCollector",
    "MetricsServer",
    "PublisherCollector",
    "handler",
    "serve",
]

log = logging.getLogger(__name__)

#: Every metric family name exposed (without ``_total``/``_bucket`` suffixes).
METRIC_NAMES: Final = (
    "streamer_reports_published",
    "streamer_reports_confirmed",
    "streamer_reports_coalesced",
    "streamer_reports_dropped",
    "streamer_reports_pending",
    "streamer_reports_resent",
    "streamer_confirm_latency_seconds",
    "streamer_connections_open",
    "streamer_channels_open",
    "streamer_reconnects",
    "streamer_board_tasks",
    "streamer_received_reports",
    "streamer_received_ignored",
    "streamer_received_malformed",
    "streamer_board_gaps",
    "streamer_board_stalled_tasks",
    "streamer_received_seq_jumps",
    "streamer_received_clock_skew",
    "streamer_board_evicted",
    "streamer_end_to_end_latency_seconds",
    "streamer_task_progress_ratio",
)

# Every half decade (factor ~3.16): 10 µs .. 100 s in 15 Prometheus buckets, each one an
# exact edge of LatencyHistogram, so no count lands in the wrong bucket.
_EDGES: Final = tuple(range(0, LatencyHistogram.BUCKETS, LatencyHistogram.PER_DECADE // 2))
# The classic text format: every Prometheus 2.x scrapes it (names here are all legacy-valid).
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4


class _HasStats(Protocol):
    @property
    def stats(self) -> Stats: ...


def _histogram(
    name: str, documentation: str, counts: Sequence[int], total: float
) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    seen = 0
    start = 0
    for edge in _EDGES:
        seen += sum(counts[start : edge + 1])
        start = edge + 1
        buckets.append((repr(LatencyHistogram.upper_bound(edge)), seen))
    buckets.append(("+Inf", sum(counts)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Iterable[tuple[str, float]],
) -> Metric:
    metric = family(name, documentation, labels=[label])
    for key, value in values:
        metric.add_metric([key], value)
    return metric


class PublisherCollector(Collector):
    """Exposes a publisher's accounting (a :class:`~streamer.Publisher` or
    :class:`~streamer.BackgroundPublisher`: anything with a ``stats`` snapshot).

    Register it into a registry of your own, or let the publisher serve one itself with the
    ``metrics_port`` setting::

        registry.register(PublisherCollector(publisher))
    """

    def __init__(self, publisher: _HasStats) -> None:
        self._publisher = publisher

    def collect(self) -> Iterator[Metric]:
        s = self._publisher.stats
        yield _counter("streamer_reports_published", "Reports handed to publish().", s.published)
        yield _counter("streamer_reports_confirmed", "Reports the broker confirmed.", s.confirmed)
        yield _counter(
            "streamer_reports_coalesced",
            "Reports superseded by a newer report of their task before being sent.",
            s.coalesced,
        )
        yield _labelled(
            CounterMetricFamily,
            "streamer_reports_dropped",
            "Reports dropped (never queued for later), by reason.",
            "reason",
            ((reason, s.dropped_by_reason.get(reason, 0)) for reason in DROP_REASONS),
        )
        yield _gauge("streamer_reports_pending", "Reports held or awaiting a confirm.", s.pending)
        yield _counter(
            "streamer_reports_resent",
            "Latest reports of active tasks re-sent after a reconnect.",
            s.resent,
        )
        yield _histogram(
            "streamer_confirm_latency_seconds",
            "Time from writing a report to the broker to its confirm.",
            s.confirm_latency_counts,
            s.confirm_latency_sum,
        )
        yield _gauge("streamer_connections_open", "AMQP connections up.", s.connections)
        yield _gauge("streamer_channels_open", "Confirm-mode channels up.", s.channels)
        yield _counter("streamer_reconnects", "Connections re-established.", s.reconnects)


class BoardCollector(Collector):
    """Exposes a :class:`~streamer.board.Board` and its consumer's counters.

    Args:
        board: the board the reports are folded into.
        counters: the consumer's :attr:`~streamer.consumer.Consumer.counters` (for malformed
            messages), if any.
        max_task_series: at most this many ``streamer_task_progress_ratio`` series, for the most
            recently updated active tasks: a board of 100k tasks must not make 100k series.
    """

    def __init__(
        self,
        board: Board,
        counters: Mapping[str, int] | None = None,
        *,
        max_task_series: int = 100,
    ) -> None:
        if max_task_series < 0:
            raise ValueError(f"max_task_series must be >= 0, not {max_task_series}")
        self._board = board
        self._counters = counters
        self._max_task_series = max_task_series

    def collect(self) -> Iterator[Metric]:
        board = self._board
        by_state = board.by_state()
        states = list(STATES) + sorted(set(by_state) - set(STATES))
        yield _labelled(
            GaugeMetricFamily,
            "streamer_board_tasks",
            "Tasks on the board, by state.",
            "state",
            ((state, by_state.get(state, 0)) for state in states),
        )
        yield _counter(
            "streamer_received_reports",
            "Well-formed reports received (applied or ignored).",
            board.received,
        )
        yield _labelled(
            CounterMetricFamily,
            "streamer_received_ignored",
            "Reports ignored because a newer one (stale) or the same one (duplicate) was shown.",
            "reason",
            (("stale", board.stale), ("duplicate", board.duplicates)),
        )
        counters = self._counters or {}
        yield _labelled(
            CounterMetricFamily,
            "streamer_received_malformed",
            "Malformed messages received and rejected, by kind.",
            "kind",
            ((kind, counters.get(kind, 0)) for kind in MALFORMED),
        )
        yield _gauge(
            "streamer_board_gaps", "Reports known missing over the tasks on the board.", board.gaps
        )
        yield _gauge(
            "streamer_board_stalled_tasks",
            "Active tasks with no report for longer than the stall bound (a worker that died?).",
            board.count_stalled(),
        )
        yield _counter(
            "streamer_received_seq_jumps",
            "Reports whose seq jumped too far from their task's (foreign or restarted "
            "sequences); each restarts the task's sequence.",
            board.jumps,
        )
        yield _counter(
            "streamer_received_clock_skew",
            "Reports whose sent_at gave an end-to-end latency outside [0, 1 h] (not observed).",
            board.clock_skew,
        )
        yield _counter(
            "streamer_board_evicted", "Tasks evicted to keep memory bounded.", board.evicted
        )
        latency = board.latency
        yield _histogram(
            "streamer_end_to_end_latency_seconds",
            "Time from a report's sent_at to its arrival here.",
            latency.counts,
            latency.total,
        )
        progress = GaugeMetricFamily(
            "streamer_task_progress_ratio",
            "Progress (done/total) of the most recently updated active tasks.",
            labels=["task_id"],
        )
        shown = 0
        for task in board.recent():
            if shown >= self._max_task_series:
                break
            ratio = task.progress
            if task.finished or ratio is None:
                continue
            progress.add_metric([task.task_id], ratio)
            shown += 1
        yield progress


def handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler answering with ``registry`` in the Prometheus text format.

    It runs on the event loop that owns the publisher or board, so every scrape reads one
    consistent snapshot (no other thread touches their state).
    """

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    return metrics


class MetricsServer:
    """``/metrics`` served by aiohttp on the running event loop; :meth:`close` stops it."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str) -> None:
        self.host = host
        self.port = port
        app = web.Application()
        app.router.add_get("/metrics", handler(registry))
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        await self._runner.cleanup()

    def __repr__(self) -> str:
        return f"<MetricsServer http://{self.host}:{self.port}/metrics>"


async def serve(*collectors: Collector, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``collectors`` on ``http://host:port/metrics`` (port 0 picks a free one).

    Raises:
        OSError: the port cannot be bound.
    """
    registry = CollectorRegistry(auto_describe=True)
    for collector in collectors:
        registry.register(collector)
    server = MetricsServer(registry, port, host)
    await server.start()
    log.info("serving metrics on http://%s:%d/metrics", host, server.port)
    return server
