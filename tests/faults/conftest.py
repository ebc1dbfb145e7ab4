"""Fault fixtures: a private broker node (plain and TLS listeners), the CA that signed its
certificate, and a record of the figures each test measures.

The shared broker is never stopped, blocked or reconfigured: every test that breaks a broker
breaks a private node (``tests/broker.py``) or a proxy in front of one (``tests/proxy.py``).
Figures go to ``tests/faults/results/figures.json`` (not versioned) and to the end of the
pytest report, so that docs/reliability.md can quote measurements, not hopes.

``STREAMER_FAULTS_LONG=1`` (``make faults-long``) runs the longer variants.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.broker import PrivateNode, TlsFiles
from tests.proxy import Proxy

LONG = os.environ.get("STREAMER_FAULTS_LONG") == "1"
RESULTS = Path(__file__).with_name("results") / "figures.json"
_figures: dict[str, dict[str, Any]] = {}


def record(test: str, **figures: Any) -> None:
    """Keep what a test measured (merged into the results file at the end of the session)."""
    _figures.setdefault(test, {}).update(figures)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _figures:
        return
    old: dict[str, Any] = {}
    if RESULTS.exists():
        try:
            old = json.loads(RESULTS.read_text())
        except ValueError:
            old = {}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for test, figures in _figures.items():
        old[test] = {"measured_at": stamp, "long": LONG, **figures}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _figures:
        return
    terminalreporter.section("fault figures")
    for test, figures in sorted(_figures.items()):
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{test}: {shown}")
    terminalreporter.write_line(f"(written to {RESULTS})")


class GcPauses:
    """The longest pause of Python's cyclic garbage collector while it is watched.

    A ``publish()`` call measured by the wall clock includes any collection that happens to
    run inside it (and any time the OS gives the CPU to the broker instead); this tells the
    two apart from real waiting when a figure looks high.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._started)


@pytest.fixture
def gc_pauses() -> Iterator[GcPauses]:
    pauses = GcPauses()
    gc.callbacks.append(pauses._callback)
    yield pauses
    gc.callbacks.remove(pauses._callback)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority; only clients told about it trust the node."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def node(ca: trustme.CA) -> Iterator[PrivateNode]:
    """A private node the fault tests may restart, crash, alarm and count connections on.

    Its TLS certificate is issued for ``localhost`` only (not 127.0.0.1), so that a client
    connecting by another name must fail host name verification.
    """
    cert = ca.issue_cert("localhost")
    tls = TlsFiles(
        ca=ca.cert_pem.bytes().decode(),
        cert="".join(blob.bytes().decode() for blob in cert.cert_chain_pems),
        key=cert.private_key_pem.bytes().decode(),
    )
    with PrivateNode(prefix="streamer-faults", tls=tls) as n:
        yield n


@pytest.fixture
async def proxy(node: PrivateNode) -> AsyncIterator[Proxy]:
    """A TCP proxy in front of the private node's plain AMQP listener."""
    async with Proxy(node.url) as p:
        yield p
