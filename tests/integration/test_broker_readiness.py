"""RabbitMQ 4.x readiness: nothing the project declares is a transient non-exclusive queue, and
no channel uses global QoS (RabbitMQ 4.3 denies both by default).

Every tool that declares something runs against the broker in turn: the receiving commands
(listen, watch, dashboard, consume), the history and a view reading it, the load harness's
watcher and sink. While each runs, the broker itself is asked (rabbitmqctl) what queues and
channels exist; every queue the tool created is checked, and every channel's global prefetch.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

from streamer.settings import DEFAULT_URL
from tests.broker import node_for_url
from tests.helpers import run_streamer, start_streamer

CALLBACK = "json:dumps"  # any importable callable


def ctl(*args: str) -> list[dict[str, Any]]:
    """``rabbitmqctl ARGS --formatter json`` on the node under test."""
    cmd = ["rabbitmqctl", *args, "--formatter", "json", "-q"]
    url = os.environ.get("STREAMER_URL") or DEFAULT_URL
    node = os.environ.get("TEST_RABBITMQ_NODE") or node_for_url(url)
    if node:
        cmd[1:1] = ["-n", node]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    found: list[dict[str, Any]] = json.loads(out or "[]")
    return found


def queues() -> dict[str, dict[str, Any]]:
    return {q["name"]: q for q in ctl("list_queues", "name", "durable", "exclusive", "type")}


def tools(broker_url: str, exchange: str) -> dict[str, list[str]]:
    common = ["--url", broker_url, "-e", exchange]
    return {
        "listen": ["listen", *common],
        "watch": ["watch", *common],
        "dashboard": ["dashboard", *common, "--port", "0"],
        "consume": ["consume", *common, "--callback", CALLBACK],
        "listen --since": ["listen", *common, "--since", "first"],
        "loadtest watcher": [
            "loadtest", "--url", broker_url, "--exchange", exchange, "--headless", "-u", "1",
            "--rate", "50", "-t", "30s",
        ],
        "loadtest sink": [
            "loadtest", "--url", broker_url, "--exchange", exchange, "--headless", "-u", "1",
            "--rate", "50", "-t", "30s", "--no-watch", "--sink",
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    "tool",
    ["listen", "watch", "dashboard", "consume", "listen --since", "loadtest watcher",
     "loadtest sink"],
)  # fmt: skip
def test_no_transient_shared_queue_and_no_global_qos(
    broker_url: str, exchange: str, tool: str
) -> None:
    history = tool == "listen --since"
    if history:
        enabled = run_streamer("history", "enable", "--url", broker_url, "-e", exchange)
        assert enabled.returncode == 0, enabled.stderr
    before = set(queues())
    proc = start_streamer(*tools(broker_url, exchange)[tool])
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            created = {name: q for name, q in queues().items() if name not in before}
            channels = ctl("list_channels", "name", "prefetch_count", "global_prefetch_count")
            consuming = [c for c in channels if c["prefetch_count"]]
            if (created or history) and (consuming or tool == "loadtest sink"):
                break
            assert time.monotonic() < deadline, f"{tool} declared nothing in 30 s"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        if history:
            run_streamer("history", "disable", "--url", broker_url, "-e", exchange)
    transient_shared = [
        name for name, q in created.items() if not q["durable"] and not q["exclusive"]
    ]
    assert not transient_shared, f"{tool} declared transient non-exclusive queues"
    assert all(not c["global_prefetch_count"] for c in channels), channels
    if history:
        assert queues().get(f"{exchange}.history") is None  # disabled again
