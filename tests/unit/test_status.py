"""The connection's state: how it reads, and the reconnect loop logging one line per change
of it, not one per attempt (a fake keeper: no network)."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from streamer.amqp import Keeper, Phase, Status
from streamer.amqp.link import classify
from streamer.errors import AuthenticationError, BrokerError, UntrustedCertificate
from streamer.settings import Settings

URL = "amqp://guest:s3cret@127.0.0.1:5672/"


def test_status_line_masks_the_password_and_says_why_and_when() -> None:
    status = Status("listen")
    status.trying(URL)
    assert status.text(100.0) == "connecting to amqp://guest:***@127.0.0.1:5672/ — attempt 1"
    status.error = ConnectionRefusedError(111, "Connection refused")
    status.attempts = 4
    status.retry_at = 100.8
    assert status.move(Phase.UNREACHABLE, 99.0) and not status.move(Phase.UNREACHABLE, 99.5)
    assert status.since == 99.0
    assert status.text(100.0) == (
        "connecting to amqp://guest:***@127.0.0.1:5672/ — attempt 4, connection refused, "
        "next in 0.8 s"
    )
    assert status.headline() == (
        "listen: broker unreachable at amqp://guest:***@127.0.0.1:5672/: connection refused"
    )
    assert status.move(Phase.CONNECTED, 101.0)
    assert status.ever_connected and status.attempts == 0 and status.retry_at is None
    assert status.text(102.0) == "connected to amqp://guest:***@127.0.0.1:5672/"
    status.move(Phase.LOST, 103.0)
    assert status.text(103.0).startswith("reconnecting to amqp://guest:***@")


def test_refused_and_untrusted_read_as_such() -> None:
    status = Status("watch")
    status.trying(URL)
    status.error = AuthenticationError("broker refused the credentials: ACCESS_REFUSED", 403)
    status.move(Phase.REFUSED, 1.0)
    assert status.text(1.0).endswith("— attempt 1, credentials refused")
    status.error = UntrustedCertificate("amqps://h/", "self-signed certificate")
    status.move(Phase.UNTRUSTED, 2.0)
    assert status.text(2.0).endswith("— attempt 1, certificate not trusted")
    assert "s3cret" not in status.text(2.0) + status.headline()


class _Fake(Keeper[str]):
    """Fails ``failures`` attempts with ``error``, then connects; the connection is lost
    once ``lose`` is set."""

    def __init__(self, error: BaseException, failures: int, *, fatal: bool = False) -> None:
        settings = Settings(url=URL, reconnect_min=0.001, reconnect_max=0.002)
        super().__init__(settings, what="fake", fatal=fatal)
        self.error, self.failures = error, failures
        self.lose = asyncio.Event()

    async def dial(self, url: str) -> str:
        if self.failures:
            self.failures -= 1
            raise self.error
        return "conn"

    async def until_lost(self, conn: str) -> object:
        await self.lose.wait()
        self.lose.clear()
        return "reset by peer"

    async def hang_up(self, conn: str, timeout: float) -> None:
        return None


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name.startswith("streamer")
    ]


async def test_one_log_line_per_change_of_state_not_per_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    keeper = _Fake(ConnectionRefusedError(111, "Connection refused"), failures=40)
    running = asyncio.ensure_future(keeper.run())
    await asyncio.wait_for(keeper.connected.wait(), 5)
    keeper.failures = 25  # the next outage
    keeper.lose.set()
    await asyncio.sleep(0)
    while not keeper.connected.is_set() or keeper.failures:
        await asyncio.sleep(0.005)
    keeper.stop()
    await asyncio.wait_for(running, 5)
    assert _lines(caplog) == [
        "WARNING fake: broker unreachable at amqp://guest:***@127.0.0.1:5672/: connection "
        "refused; retrying",
        "WARNING fake: connected to amqp://guest:***@127.0.0.1:5672/ after 40 failed attempts",
        "WARNING fake: lost connection to amqp://guest:***@127.0.0.1:5672/: reset by peer; "
        "reconnecting",
        "WARNING fake: broker unreachable at amqp://guest:***@127.0.0.1:5672/: connection "
        "refused; retrying",
        "WARNING fake: connected to amqp://guest:***@127.0.0.1:5672/ after 25 failed attempts",
    ]
    assert keeper.reconnects == 1 and keeper.status.connected


async def test_a_clean_first_connection_is_not_news(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    keeper = _Fake(OSError("unused"), failures=0)
    running = asyncio.ensure_future(keeper.run())
    await asyncio.wait_for(keeper.connected.wait(), 5)
    keeper.stop()
    await asyncio.wait_for(running, 5)
    assert _lines(caplog) == []


async def test_refused_credentials_raise_at_once_without_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keeper = _Fake(AuthenticationError("refused the credentials", 403), failures=5, fatal=True)
    with pytest.raises(AuthenticationError):
        await asyncio.wait_for(keeper.run(), 5)
    assert keeper.status.phase is Phase.REFUSED and keeper.failures == 4
    assert _lines(caplog) == []  # the command's one error line says it


async def test_a_publisher_refused_logs_it_once_and_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keeper = _Fake(AuthenticationError("refused the credentials", 403), failures=30)
    running = asyncio.ensure_future(keeper.run())
    await asyncio.wait_for(keeper.connected.wait(), 5)
    keeper.stop()
    await asyncio.wait_for(running, 5)
    assert [line.split(" fake: ")[0] for line in _lines(caplog)] == ["ERROR", "WARNING"]
    assert _lines(caplog)[0] == "ERROR fake: refused the credentials; retrying"


async def test_an_untrusted_certificate_is_its_own_state() -> None:
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "self-signed certificate"
    keeper = _Fake(cert, failures=1, fatal=True)
    with pytest.raises(UntrustedCertificate):
        await asyncio.wait_for(keeper.run(), 5)
    assert keeper.status.phase is Phase.UNTRUSTED


async def test_views_that_take_turns_share_one_status() -> None:
    status = Status("dashboard")
    first = _Fake(ConnectionRefusedError(111, "Connection refused"), failures=3)
    first.status = status
    running = asyncio.ensure_future(first.run())
    await asyncio.wait_for(first.connected.wait(), 5)
    first.stop()
    await running
    second = Keeper[str](first.settings, what="dashboard", status=status)
    assert second.status is status and status.ever_connected and not second.ever_connected


@pytest.mark.parametrize(
    ("code", "text", "fatal"),
    [
        (403, "ACCESS_REFUSED - access to exchange 'x' refused for user 'guest'", True),
        (404, "NOT_FOUND - no queue 'streamer.history' in vhost '/'", True),
        (406, "PRECONDITION_FAILED - inequivalent arg 'x-queue-type'", True),
        (404, "NOT_FOUND - home node 'rabbit@a' of durable queue 'q' in vhost '/' is down or "
         "inaccessible", False),
        (406, "PRECONDITION_FAILED - stream queue 'q' in vhost '/' does not have a running "
         "replica on the local node", False),
        (541, "INTERNAL_ERROR", False),
    ],
)  # fmt: skip
def test_a_refused_set_up_is_final_unless_the_queue_is_still_starting(
    code: int, text: str, fatal: bool
) -> None:
    # After a broker restart a durable queue or a stream answers 404/406 "down" for a few
    # seconds: a view that gave up then would stay empty for good.
    error = BrokerError(f"broker closed the channel 1: {code} {text}", code)
    assert classify(URL, error) == (error, fatal)
