"""A real Prometheus scrapes the dashboard and a publisher; every Grafana query returns data.

Prometheus comes from the system (Debian's ``prometheus`` package, installed by ``make test``
when missing); its absence is a failure that says how to install it, never a skip.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamer import Publisher, Report
from tests.helpers import free_port as _free_port
from tests.helpers import running_dashboard

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_JSON = ROOT / "grafana" / "dashboards" / "streamer.json"
SCRAPE_INTERVAL = 1.0


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed; `make test` installs it (Debian package prometheus), "
            "or run: apt-get install -y prometheus",
            pytrace=False,
        )
    return found


def grafana_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel in the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


async def _wait_http(url: str, timeout: float = 30) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


@pytest.fixture
async def dashboard(broker_url: str, exchange: str, free_port: int) -> AsyncIterator[str]:
    """``streamer dashboard`` on a free port, consuming; yields its base URL."""
    async with running_dashboard(broker_url, exchange, free_port) as url:
        yield url.rstrip("/")


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A Prometheus with an empty config file the test fills in (it reloads on SIGHUP)."""
    binary = _tool("prometheus")
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {}\n")
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        yield config, port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def _query(session: aiohttp.ClientSession, port: int, expr: str) -> list[Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query"
    async with session.get(url, params={"query": expr}) as response:
        body = await response.json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


async def test_every_grafana_query_returns_data(
    broker_url: str, exchange: str, dashboard: str, prometheus: tuple[Path, int]
) -> None:
    config, port = prometheus
    async with Publisher(broker_url, exchange, metrics_port=0) as pub:
        assert pub.metrics_url is not None
        publisher_target = pub.metrics_url.removeprefix("http://").removesuffix("/metrics")
        dashboard_target = dashboard.removeprefix("http://")
        config.write_text(
            f"global:\n  scrape_interval: {SCRAPE_INTERVAL:g}s\n"
            "scrape_configs:\n"
            f"  - job_name: dashboard\n    static_configs: [{{targets: ['{dashboard_target}']}}]\n"
            f"  - job_name: publisher\n    static_configs: [{{targets: ['{publisher_target}']}}]\n"
        )

        async def traffic() -> None:
            """Three tasks that never end (progress series), others that finish."""
            n = 0
            while True:
                n += 1
                for t in range(3):
                    pub.publish(
                        Report(
                            task_id=f"active-{t}",
                            state="running",
                            progress_report={"sync": {"items_done": n % 100, "items_total": 100}},
                        )
                    )
                pub.publish(Report(task_id=f"done-{n}", state="finished"))
                await asyncio.sleep(0.05)

        feeding = asyncio.ensure_future(traffic())
        try:
            await _wait_http(f"http://127.0.0.1:{port}/-/ready")
            async with aiohttp.ClientSession() as session:
                await session.post(f"http://127.0.0.1:{port}/-/reload")
                async with asyncio.timeout(30):
                    while True:
                        up = await _query(session, port, "up == 1")
                        if len(up) == 2:
                            break
                        await asyncio.sleep(0.5)
                await asyncio.sleep(6 * SCRAPE_INTERVAL)  # several samples for rate()
                empty = []
                for title, expr in grafana_queries():
                    promql = expr.replace("$__rate_interval", "5s")
                    if not await _query(session, port, promql):
                        empty.append(f"{title}: {expr}")
                assert not empty, "queries without data:\n" + "\n".join(empty)
                # The identity panel is not just present but 0 (both scrapes are snapshots).
                identity = next(e for t, e in grafana_queries() if t.startswith("Unaccounted"))
                (sample,) = await _query(session, port, identity)
                assert float(sample["value"][1]) == 0
        finally:
            feeding.cancel()


def test_grafana_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    assert dashboard["uid"] == "streamer-overview"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
    titles = " ".join(title.lower() for title, _ in grafana_queries())
    for topic in (
        "publish",
        "drop",
        "unaccounted",
        "confirm latency",
        "pending",
        "connections",
        "tasks by state",
        "progress",
        "end-to-end",
    ):
        assert topic in titles, topic


async def test_promtool_accepts_our_exposition(
    broker_url: str, exchange: str, dashboard: str
) -> None:
    promtool = _tool("promtool")
    async with Publisher(broker_url, exchange, metrics_port=0) as pub:
        pub.publish(
            Report(
                task_id="lint",
                state="running",
                sent_at=time.time(),
                progress_report={"items_done": 1, "items_total": 2},
            )
        )
        assert await pub.flush(10)
        assert pub.metrics_url is not None
        async with aiohttp.ClientSession() as session:
            for url in (pub.metrics_url, f"{dashboard}/metrics"):
                async with session.get(url) as response:
                    text = await response.read()
                done = subprocess.run(
                    [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
                )
                assert done.returncode == 0, (url, done.stdout, done.stderr)
                assert b"streamer_" in text
