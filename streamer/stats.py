"""Publisher accounting: counters, drop reasons and a cheap confirm-latency histogram."""

from __future__ import annotations

import math
from typing import Final

import msgspec

__all__ = ["DROP_REASONS", "LatencyHistogram", "Stats"]

DROP_REASONS: Final = (
    "overflow",  # max_pending reports already held
    "disconnected",  # the connection was down or went down before the confirm
    "blocked",  # the broker blocked the connection (resource alarm)
    "nacked",  # the broker refused the publish
    "returned",  # unroutable and mandatory was set
    "closed",  # the publisher was closing or closed
)

# Log-spaced buckets from 10 µs to 100 s: 120 per decade (each 1.93% wider than the one
# before) keep every quantile within 2% of the true value, so capacity figures merged from
# many processes (bucket counts add exactly) are as good as one process's own.
_BASE: Final = 1e-5
_PER_DECADE: Final = 120
_BUCKETS: Final = 7 * _PER_DECADE + 1
_log10: Final = math.log10


class LatencyHistogram:
    """Counts latencies in fixed log buckets: O(1) to record, no samples kept."""

    __slots__ = ("count", "counts", "max", "total")

    #: Buckets per decade, and in all (bucket 0 holds everything up to 10 µs).
    PER_DECADE: Final = _PER_DECADE
    BUCKETS: Final = _BUCKETS

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def observe(self, seconds: float, n: int = 1) -> None:
        """Record ``n`` events that each took ``seconds``."""
        if seconds <= _BASE:
            index = 0
        else:  # (every report a view receives comes here: no call it can do without)
            index = int(_log10(seconds / _BASE) * _PER_DECADE) + 1
            if index >= _BUCKETS:
                index = _BUCKETS - 1
        self.counts[index] += n
        self.count += n
        self.total += seconds * n
        if seconds > self.max:
            self.max = seconds

    @staticmethod
    def upper_bound(index: int) -> float:
        """The upper bound, in seconds, of bucket ``index`` (bucket 0 holds all <= 10 µs)."""
        return _BASE * 10 ** (index / _PER_DECADE)

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding quantile ``q`` (0..1), in seconds."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return min(self.upper_bound(index), self.max)
        return self.max


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a publisher's accounting.

    ``published == confirmed + coalesced + dropped + pending`` holds in every snapshot.
    Re-sends after a reconnect are not publishes: they are counted in ``resent`` only.
    """

    published: int = 0
    confirmed: int = 0
    coalesced: int = 0
    dropped: int = 0
    dropped_by_reason: dict[str, int] = msgspec.field(
        default_factory=lambda: dict.fromkeys(DROP_REASONS, 0)
    )
    pending: int = 0
    resent: int = 0
    reconnects: int = 0
    connections: int = 0
    channels: int = 0
    confirm_latency_p50: float = 0.0
    confirm_latency_p99: float = 0.0
    confirm_latency_max: float = 0.0
    #: Per-bucket confirm counts of :class:`LatencyHistogram` (for Prometheus histograms).
    confirm_latency_counts: tuple[int, ...] = ()
    confirm_latency_sum: float = 0.0

    @property
    def balanced(self) -> bool:
        """Whether the accounting identity holds (it always should)."""
        return self.published == self.confirmed + self.coalesced + self.dropped + self.pending

    def __str__(self) -> str:
        """One line for people: the identity's terms, drops by reason, confirm latency."""
        reasons = ", ".join(f"{why} {n:,}" for why, n in self.dropped_by_reason.items() if n)
        return (
            f"published {self.published:,}: confirmed {self.confirmed:,}, coalesced "
            f"{self.coalesced:,}, dropped {self.dropped:,}{f' ({reasons})' if reasons else ''}, "
            f"pending {self.pending:,}; confirm latency p50 {self.confirm_latency_p50 * 1e3:.2f} "
            f"ms, p99 {self.confirm_latency_p99 * 1e3:.2f} ms, max "
            f"{self.confirm_latency_max * 1e3:.2f} ms; resent {self.resent:,}, reconnects "
            f"{self.reconnects:,}, connections {self.connections}, channels {self.channels}"
        )

    def __repr__(self) -> str:
        """Every field but the histogram's buckets and sum (they are for Prometheus, and 841
        bucket counts bury the rest); drop reasons only where something was dropped."""
        parts = []
        for name in self.__struct_fields__:
            if name in _NOT_IN_REPR:
                continue
            value = getattr(self, name)
            if name == "dropped_by_reason":
                value = {why: n for why, n in value.items() if n}
            elif isinstance(value, float):
                value = float(f"{value:.3g}")
            parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


_NOT_IN_REPR: Final = frozenset({"confirm_latency_counts", "confirm_latency_sum"})
