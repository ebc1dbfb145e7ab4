"""How a publisher's accounting reads when printed: people get the identity and the latency,
never the histogram's bucket counts, and programs keep every field."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from streamer import Stats
from streamer.stats import DROP_REASONS, LatencyHistogram

BUSY = Stats(
    published=1_680_000,
    confirmed=1_677_000,
    coalesced=990,
    dropped=2_010,
    dropped_by_reason={**dict.fromkeys(DROP_REASONS, 0), "overflow": 2_000, "closed": 10},
    confirm_latency_p50=0.0012589254117941675,
    confirm_latency_p99=0.0039810717055349725,
    confirm_latency_max=0.0051,
    confirm_latency_counts=(7,) * LatencyHistogram.BUCKETS,
    confirm_latency_sum=2.5,
    connections=1,
    channels=1,
)


def test_str_is_one_readable_line() -> None:
    assert str(BUSY) == (
        "published 1,680,000: confirmed 1,677,000, coalesced 990, dropped 2,010 "
        "(overflow 2,000, closed 10), pending 0; confirm latency p50 1.26 ms, p99 3.98 ms, "
        "max 5.10 ms; resent 0, reconnects 0, connections 1, channels 1"
    )
    assert "dropped 0, pending 0" in str(Stats())  # no empty list of reasons


def test_repr_names_fields_without_the_histogram() -> None:
    text = repr(BUSY)
    assert text.startswith("Stats(published=1680000, confirmed=1677000, coalesced=990, ")
    assert "dropped_by_reason={'overflow': 2000, 'closed': 10}" in text
    assert "confirm_latency_p50=0.00126, confirm_latency_p99=0.00398" in text
    assert "confirm_latency_counts" not in text and "(7, 7" not in text
    assert len(text) < 400


def test_fields_stay_whole_for_programs() -> None:
    assert BUSY.confirm_latency_counts == (7,) * LatencyHistogram.BUCKETS
    assert BUSY.dropped_by_reason["nacked"] == 0
    decoded = msgspec.json.decode(msgspec.json.encode(BUSY), type=Stats)
    assert decoded == BUSY


@given(st.floats(min_value=1e-5, max_value=99.0))
def test_latency_buckets_are_within_two_percent(seconds: float) -> None:
    # The bucket that counts a latency reports it (its upper bound) at most 2% high, so
    # every quantile read from the buckets, merged across processes or not, is within 2%.
    hist = LatencyHistogram()
    hist.observe(seconds)
    (index,) = [i for i, n in enumerate(hist.counts) if n]
    upper = LatencyHistogram.upper_bound(index)
    assert seconds <= upper * (1 + 1e-12) and upper <= seconds * 1.02
    assert index == 0 or LatencyHistogram.upper_bound(index - 1) < seconds * (1 + 1e-12)
