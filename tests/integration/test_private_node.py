"""PrivateNode: the broker integration tests may stop, restart or push into an alarm.

One test walks the whole lifecycle, because every node start costs about 5 s.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from tests.broker import PrivateNode
from tests.helpers import amqp_problem

pika = pytest.importorskip("pika")


def _eventually(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _alarms(node: PrivateNode) -> str:
    return node.ctl("eval", "rabbit_alarm:get_alarms().").strip()


def test_lifecycle() -> None:
    with PrivateNode(prefix="streamer-selftest") as node:
        assert node.port != 5672
        assert node.url == f"amqp://guest:guest@127.0.0.1:{node.port}/"
        assert amqp_problem(node.port) is None
        assert node.connections() == []
        assert node.channels_count() == 0

        client = pika.BlockingConnection(pika.URLParameters(node.url))
        try:
            client.channel()
            client.channel()
            [conn] = node.connections()
            assert (conn["state"], conn["channels"]) == ("running", 2)
            assert node.channels_count() == 2
        finally:
            client.close()
        assert _eventually(lambda: node.connections() == [])

        node.set_memory_alarm()
        assert _eventually(lambda: "{resource_limit,memory," in _alarms(node)), _alarms(node)
        node.clear_memory_alarm()
        assert _eventually(lambda: _alarms(node) == "[]"), _alarms(node)

        node.restart()
        assert amqp_problem(node.port) is None

        node.stop()
        assert not node.is_running()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", node.port), timeout=2).close()
        node.stop()
        data_dir = node.data_dir
    assert data_dir is not None
    assert not data_dir.exists()


def _assert_start_fails(node: PrivateNode, evidence: str) -> None:
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=evidence):
            node.start(timeout=30)
        assert time.monotonic() - started < 20, "the failure should be noticed, not timed out"
        assert not node.is_running()
    finally:
        node.close()


def test_bad_config_fails_with_the_reason() -> None:
    node = PrivateNode(prefix="streamer-selftest", extra_config="this is = = not valid")
    _assert_start_fails(node, "failed_to_parse_configuration_file")


def test_port_in_use_fails_with_the_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        _assert_start_fails(
            PrivateNode(prefix="streamer-selftest", port=sock.getsockname()[1]), "eaddrinuse"
        )
