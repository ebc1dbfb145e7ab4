"""A publisher serves its accounting on ``metrics_port``; a busy port never stops it."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer import BackgroundPublisher, Publisher, Report
from tests.integration.conftest import Collector


async def _scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


async def test_publisher_serves_its_accounting(
    broker_url: str, exchange: str, collector: Collector
) -> None:
    async with Publisher(broker_url, exchange, metrics_port=0) as pub:
        assert pub.metrics_url is not None and pub.metrics_url.startswith("http://127.0.0.1:")
        for n in range(500):
            pub.publish(Report(task_id=f"m{n % 5}", state="running", progress_report={"n": n}))
        assert await pub.flush(20)
        m = await _scrape(pub.metrics_url)
        s = pub.stats
        assert m["streamer_reports_published_total"] == s.published == 500
        assert m["streamer_reports_confirmed_total"] == s.confirmed
        assert m["streamer_reports_coalesced_total"] == s.coalesced
        assert m["streamer_confirm_latency_seconds_count"] == s.confirmed
        assert m["streamer_connections_open"] == 1
        assert m["streamer_channels_open"] == 1
        dropped = sum(v for k, v in m.items() if k.startswith("streamer_reports_dropped_total"))
        assert m["streamer_reports_published_total"] == (
            m["streamer_reports_confirmed_total"]
            + m["streamer_reports_coalesced_total"]
            + dropped
            + m["streamer_reports_pending"]
        )
        url = pub.metrics_url
    with pytest.raises(aiohttp.ClientConnectionError):  # closing released the port
        await _scrape(url)


def test_background_publisher_serves_metrics(
    broker_url: str, exchange: str, free_port: int
) -> None:
    pub = BackgroundPublisher(broker_url, exchange, metrics_port=free_port)
    try:
        for n in range(100):
            pub.publish(Report(task_id="bg", state="running", progress_report={"n": n}))
        assert pub.flush(20)
        m = asyncio.run(_scrape(f"http://127.0.0.1:{free_port}/metrics"))
        assert m["streamer_reports_published_total"] == 100
        assert m["streamer_reports_confirmed_total"] + m["streamer_reports_coalesced_total"] == 100
    finally:
        pub.close()


async def test_busy_metrics_port_is_logged_not_raised(
    broker_url: str, exchange: str, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="streamer.publisher"):
            async with Publisher(broker_url, exchange, metrics_port=port) as pub:
                pub.publish(Report(task_id="busy", state="finished"))
                assert await pub.flush(10)
                assert pub.metrics_url is None
                assert pub.stats.confirmed == 1
    assert f"cannot bind 127.0.0.1:{port}" in caplog.text
