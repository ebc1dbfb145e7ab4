"""Markers by folder, the event loop by folder, and the fixtures more than one folder uses:
the broker every integration test talks to, unique names, a fresh exchange, a free port.

Each folder of tests/ is one marker, so that ``pytest -m unit`` runs what needs no network
and no broker (tests/unit and tests/loadtest, whose tests exercise the load tooling's pure
parts), ``-m integration`` what needs the broker under test, ``-m faults`` what starts
private broker nodes and breaks them, and ``-m browser`` the dashboard in headless Chromium.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from streamer.settings import DEFAULT_URL, mask_url
from tests.helpers import amqp_problem, delete_from_broker
from tests.helpers import free_port as _free_port

TESTS = Path(__file__).resolve().parent
# tests/<folder>/... -> the markers its tests get; the loadtest folder tests pure code.
FOLDER_MARKERS = {
    "unit": ("unit",),
    "loadtest": ("unit", "loadtest"),
    "integration": ("integration",),
    "faults": ("faults",),
    "browser": ("browser",),
}
# Folders whose async tests run under uvloop, like the CLI and the background publisher.
UVLOOP_FOLDERS = {"integration", "faults", "browser"}


def _folder(path: Path) -> str:
    """The first folder below tests/ that ``path`` is in ("" for none)."""
    try:
        parts = path.resolve().relative_to(TESTS).parts
    except ValueError:
        return ""
    return parts[0] if len(parts) > 1 else ""


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name in FOLDER_MARKERS.get(_folder(item.path), ()):
            item.add_marker(name)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop for the suites that talk to a broker; asyncio's own loop for the unit tests.

    (pytest-asyncio >= 1.4 has this hook, and takes no None for an answer: so unit items get
    asyncio's loop by name.)
    """
    if _folder(item.path) in UVLOOP_FOLDERS:
        import uvloop  # not imported for unit runs (nor on platforms without it)

        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The broker under test: ``$STREAMER_URL`` or the local default. Missing = failure."""
    url = os.environ.get("STREAMER_URL") or DEFAULT_URL
    parts = urlsplit(url)
    problem = amqp_problem(parts.port or 5672, parts.hostname or "127.0.0.1", timeout=3)
    if problem is not None:
        pytest.fail(
            f"no RabbitMQ broker at {mask_url(url)} ({problem}). Integration tests need a "
            "real broker: run `make test` (which finds or starts one) or set STREAMER_URL.",
            pytrace=False,
        )
    return url


@pytest.fixture
def unique() -> str:
    """A short unique token for queue and exchange names of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port nobody listens on (connections to it are refused)."""
    return _free_port()


@pytest.fixture
async def exchange(broker_url: str, unique: str) -> AsyncIterator[str]:
    """A fresh topic exchange name; deleted after the test."""
    name = f"streamer.test.{unique}"
    yield name
    await delete_from_broker(broker_url, exchanges=(name,))
