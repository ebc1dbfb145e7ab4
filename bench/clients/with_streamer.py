"""streamer, the client under test: the same reports through ``Publisher``, decoded from the
shared bodies so its own encoding is part of what gets timed. Named ``with_streamer`` so it
cannot shadow the package."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import Any

from ._common import REPO_ROOT, Message, Meter, RunOptions, Unavailable, _run_async, summarize

# publish() never blocks: it buffers the report and, if the same task still has a report
# waiting to be written, replaces it (latest report per task wins). A load generator that
# publishes in a tight loop therefore never lets the writer run and most reports coalesce
# away. To have every report delivered, like the other clients, we pace ourselves to the
# confirm window with throttle(window), the same bound the pipelined clients get. Only once
# per this many reports: throttle() always yields to the loop, which per report would cost
# more than publish() itself.
STREAMER_PACE_EVERY = 100


def build_reports(report_type: type, messages: Sequence[Message]) -> list[Any]:
    """Decode the shared bodies into ``streamer.Report`` structs (before timing).

    Decoding the very bytes the other clients send keeps the logical content
    identical; streamer then does its own encoding inside the timed phase.
    """
    import msgspec

    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(report_type)
    return [decoder.decode(body) for _, body in messages]


def run_streamer(
    url: str, exchange: str, messages: Sequence[Message], opts: RunOptions
) -> dict[str, Any]:
    """streamer.Publisher: ``publish()`` paced by ``throttle(window)``, then ``flush()``.

    Confirm latency comes from ``pub.stats`` because ``publish()`` returns
    nothing to time against (streamer's own histogram: log buckets, ~12% wide).
    Coalesced and dropped reports are reported as drops: msgs/s counts only
    confirmed messages, never accepted reports.
    """
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from streamer import Publisher, Report
    except ImportError as exc:
        raise Unavailable(f"import failed: {exc!r}") from exc
    reports = build_reports(Report, messages)
    # Pace at least once per round of tasks too, or with few tasks one task's reports
    # would coalesce between two throttle() calls (only matters for smoke-sized runs).
    pace_every = max(1, min(STREAMER_PACE_EVERY, len({rk for rk, _ in messages})))
    gc.collect()
    gc.freeze()

    async def main() -> dict[str, Any]:
        meter = Meter(opts.broker_pid)
        async with Publisher(url=url, exchange=exchange, **opts.streamer_options) as pub:
            publish, throttle, window = pub.publish, pub.throttle, opts.window
            meter.start()
            for i, report in enumerate(reports, 1):
                publish(report)
                if i % pace_every == 0:
                    await throttle(window)
            ok = await pub.flush(timeout=120)
            meter.stop()
            stats = pub.stats
        return summarize(
            meter,
            confirmed=stats.confirmed,
            attempted=len(reports),
            planned=len(reports),
            dropped=stats.coalesced + stats.dropped,
            p50_ms=stats.confirm_latency_p50 * 1e3,
            p99_ms=stats.confirm_latency_p99 * 1e3,
            latency_basis="stats",
            error=None if ok else "flush() returned False",
            published=stats.published,
            coalesced=stats.coalesced,
            streamer_dropped=stats.dropped,
            pending=stats.pending,
            dropped_by_reason=stats.dropped_by_reason,
            reports_per_s=len(reports) / meter.elapsed if meter.elapsed else 0.0,
        )

    return _run_async(main())
