"""TLS with certificate verification on by default, and credentials that never leak.

The private node has a TLS listener whose certificate a throwaway CA (trustme) issued for
``localhost``. Clients told about that CA connect; clients that are not (the system trust
store) or that use another host name must fail, with an error that says what to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streamer import BackgroundPublisher, Publisher, Report
from streamer.consumer import Consumer, Message
from streamer.dashboard import Auth, Dashboard
from streamer.errors import StreamerError, UntrustedCertificate
from streamer.metrics import PublisherCollector
from streamer.receiver import Receiver
from streamer.settings import Settings, load_settings
from tests.broker import PrivateNode
from tests.faults.conftest import record
from tests.helpers import run_streamer
from tests.proxy import Proxy


def exchange_name() -> str:
    return f"streamer.faults.tls.{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def consuming(consumer: Consumer, timeout: float = 10) -> AsyncIterator[None]:
    running = asyncio.ensure_future(consumer.run())
    try:
        waiting = asyncio.ensure_future(consumer.consuming.wait())
        await asyncio.wait({running, waiting}, timeout=timeout, return_when="FIRST_COMPLETED")
        waiting.cancel()
        if running.done():
            running.result()
        assert consumer.consuming.is_set(), "the consumer did not start"
        yield
    finally:
        consumer.stop()
        await running


async def test_tls_with_the_right_ca(node: PrivateNode, ca_file: str) -> None:
    exchange = exchange_name()
    settings = Settings(url=node.tls_url, exchange=exchange, ca_file=ca_file)
    seen: list[Message] = []
    async with consuming(Consumer(seen.append, settings=settings)):
        async with Publisher(settings=settings) as pub:
            pub.publish(Report(task_id="tls", state="finished"))
            assert await pub.flush(10)
            assert pub.stats.confirmed == 1
            out = await asyncio.to_thread(
                node.ctl, "-q", "list_connections", "ssl", "peer_port", "--formatter", "json"
            )
            assert [c["ssl"] for c in json.loads(out)] == [True, True]  # consumer, publisher
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.02)
    assert seen[0].report.task_id == "tls"


async def _publisher_error(url: str, caplog: pytest.LogCaptureFixture, **options: Any) -> str:
    """Run a publisher against ``url``: nothing may raise; return what it logged as errors."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamer"):
        async with Publisher(url, exchange_name(), connect_timeout=1, **options) as pub:
            pub.publish(Report(task_id="x", state="running"))
            assert pub.stats.dropped_by_reason["disconnected"] == 1
            assert pub.stats.connections == 0
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


async def test_publisher_refuses_an_untrusted_certificate(
    node: PrivateNode, ca_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The system trust store does not know our CA: verification is on by default.
    errors = await _publisher_error(node.tls_url, caplog)
    assert "TLS certificate is not trusted" in errors, errors
    assert "set ca_file" in errors and "guest:***@localhost" in errors, errors
    # The right CA but another name than the certificate's: the host name is checked too.
    by_ip = node.tls_url.replace("localhost", "127.0.0.1")
    errors = await _publisher_error(by_ip, caplog, ca_file=ca_file)
    assert "TLS certificate is not trusted" in errors and "mismatch" in errors, errors


async def _consumer_error(settings: Settings) -> str:
    """A consumer that never connected gives up at once on a certificate it cannot trust."""
    consumer = Consumer(lambda message: None, settings=settings)
    with pytest.raises(UntrustedCertificate) as caught:
        async with asyncio.timeout(10):
            await consumer.run()
    assert not consumer.consuming.is_set(), "the consumer trusted an unknown certificate"
    return str(caught.value)


async def test_consumer_refuses_an_untrusted_certificate(node: PrivateNode, ca_file: str) -> None:
    settings = Settings(url=node.tls_url, exchange=exchange_name(), reconnect_max=0.5)
    assert Consumer(lambda message: None, settings=settings)._tls(node.tls_url) == {}, (
        "without ca_file the consumer must leave aiormq's default (verifying) context alone"
    )
    error = await _consumer_error(settings)
    assert "TLS certificate is not trusted" in error and "self-signed" in error, error
    assert "guest:***@localhost" in error and "set ca_file" in error, error
    by_ip = node.tls_url.replace("localhost", "127.0.0.1")
    settings = Settings(url=by_ip, exchange=exchange_name(), ca_file=ca_file, reconnect_max=0.5)
    error = await _consumer_error(settings)
    assert "mismatch" in error, error


async def test_every_command_exits_5_on_an_untrusted_certificate(node: PrivateNode) -> None:
    """README: exit codes. The same line and code from each client (the core's receiver,
    aiormq's consumer, the publisher's pre-flight), at once."""
    runs = (
        ("listen", "--timeout", "10"),
        ("watch", "--timeout", "10"),
        ("consume", "--callback", "json:dumps"),
        ("simulate", "--tasks", "1"),
    )
    done = await asyncio.gather(
        *(asyncio.to_thread(run_streamer, *args, "--url", node.tls_url) for args in runs)
    )
    for args, result in zip(runs, done, strict=True):
        line = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 5, (args, result.stderr)
        assert line.startswith("streamer: error: amqps://guest:***@localhost:"), (args, line)
        assert "TLS certificate is not trusted" in line, (args, line)


async def test_receiver_over_tls_and_refusing_an_untrusted_certificate(
    node: PrivateNode, ca_file: str
) -> None:
    """The fast receiver dials through the shared core: verified TLS with the right CA, and a
    certificate it cannot trust stops it at once (it never connected), naming the fix."""
    exchange = exchange_name()
    settings = Settings(url=node.tls_url, exchange=exchange, ca_file=ca_file)
    bodies: list[bytes] = []
    receiver = Receiver(lambda ds: bodies.extend(d[3] for d in ds), settings=settings)
    running = asyncio.ensure_future(receiver.run())
    try:
        async with asyncio.timeout(10):
            await receiver.consuming.wait()
        async with Publisher(settings=settings) as pub:
            pub.publish(Report(task_id="tls-r", state="finished"))
            assert await pub.flush(10)
        async with asyncio.timeout(10):
            while not bodies:
                await asyncio.sleep(0.02)
    finally:
        receiver.stop()
        await running
    assert b'"task_id":"tls-r"' in bodies[0]

    for url, options, why in (
        (node.tls_url, {}, "self-signed"),  # the system's CAs do not know ours
        (node.tls_url.replace("localhost", "127.0.0.1"), {"ca_file": ca_file}, "mismatch"),
    ):
        untrusting = Receiver(
            lambda ds: None,
            settings=Settings(url=url, exchange=exchange, reconnect_max=0.5, **options),
        )
        with pytest.raises(UntrustedCertificate) as caught:
            async with asyncio.timeout(10):
                await untrusting.run()
        error = str(caught.value)
        assert "TLS certificate is not trusted" in error and why in error, error
        assert "guest:***@" in error and "set ca_file" in error, error
        assert not untrusting.consuming.is_set()


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{user}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _cli(*args: str, url: str) -> str:
    done = run_streamer(*args, env={"STREAMER_URL": url, "STREAMER_CONNECT_TIMEOUT": "1"})
    return f"{done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.mark.timeout(180)
async def test_credentials_never_shown(
    node: PrivateNode, proxy: Proxy, caplog: pytest.LogCaptureFixture, free_port: int
) -> None:
    """A real password, used through reconnects, heartbeats, outages, refusals, TLS failures,
    config errors and the command line, appears in no log line, repr, error or metric."""
    user = f"leak-{uuid.uuid4().hex[:6]}"
    password = f"S3cret-{secrets.token_hex(6)}!@"
    await asyncio.to_thread(node.ctl, "add_user", user, password)
    await asyncio.to_thread(node.ctl, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
    url = _with_credentials(proxy.url, user, password)
    wrong = _with_credentials(proxy.url, user, password[::-1])
    refused = _with_credentials(f"amqp://127.0.0.1:{free_port}/", user, password)
    untrusted = _with_credentials(node.tls_url, user, password)
    exchange = exchange_name()
    shown: list[str] = []  # everything a person or a program could get to see

    caplog.set_level(logging.DEBUG)  # every logger, aiormq's and asyncio's included
    listener = Consumer(lambda m: None, settings=Settings(url=url, exchange=exchange))
    async with (
        consuming(listener),
        Publisher(url, exchange, heartbeat=1, reconnect_max=0.2) as pub,
    ):
        pub.publish(Report(task_id="s", state="running"))
        assert await pub.flush(10)
        await proxy.reset()  # both reconnect, and say so
        async with asyncio.timeout(20):
            while pub.stats.reconnects < 1 or not pub.stats.channels:
                await asyncio.sleep(0.05)
        proxy.blackhole = True  # the heartbeat gives up on the publisher's connection
        async with asyncio.timeout(10):
            while pub.stats.reconnects < 2:
                await asyncio.sleep(0.05)
        proxy.blackhole = False
        await proxy.stop()  # refused connections, retried
        await asyncio.sleep(1)
        await proxy.start()
        pub.publish(Report(task_id="s", state="finished"))
        await pub.flush(10)
        registry = CollectorRegistry()
        registry.register(PublisherCollector(pub))
        shown += [repr(pub), str(pub), repr(pub.settings), repr(pub._pool), repr(pub.stats)]
        shown.append(generate_latest(registry).decode())

    def background() -> list[str]:  # in a thread: the proxy needs this event loop
        with BackgroundPublisher(url, exchange) as bg:
            bg.publish(Report(task_id="b", state="finished"))
            assert bg.flush(10)
            return [repr(bg), repr(bg.settings), repr(bg.stats)]

    shown += await asyncio.to_thread(background)
    for bad in (wrong, refused, untrusted):
        async with Publisher(bad, exchange, connect_timeout=0.5) as pub:
            pub.publish(Report(task_id="w", state="running"))
            shown.append(repr(pub))
        consumer = Consumer(lambda m: None, settings=Settings(url=bad, exchange=exchange))
        with contextlib.suppress(StreamerError, TimeoutError):  # refused: raises; else retries
            async with asyncio.timeout(2):
                await consumer.run()
        shown.append(repr(consumer))
    for bad_value in (
        {"url": url.replace(f":{proxy.port}", ":99999")},
        {"url": url.replace("amqp://", "http://")},
        {"url": (url, url.replace("amqp://", "ftp://"))},
        {"url": url, "channels": "two"},
    ):
        with pytest.raises(StreamerError) as info:
            load_settings(env={}, **bad_value)
        shown.append(str(info.value))
    runs = (
        (["listen", "-vv", "--timeout", "2"], url),
        (["listen", "-vv", "--timeout", "2"], refused),
        (["listen", "-vv", "--timeout", "2"], wrong),
        (["simulate", "-vv", "--tasks", "1"], url),
        (["listen", "--url", url.replace("amqp://", "http://")], url),
        (["simulate", "-v", "--tasks", "1", "--url", refused], url),
    )
    # In threads, all at once: the proxy they go through runs on this event loop.
    shown += await asyncio.gather(*(asyncio.to_thread(_cli, *a, url=u) for a, u in runs))
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    shown += [formatter.format(r) for r in caplog.records]

    text = "\n".join(shown)
    for form in {password, quote(password, safe=""), password[::-1]}:
        assert form not in text, f"the password appeared in:\n{_around(text, form)}"
    # The scenarios really happened (else the absence above would prove nothing).
    for evidence in (
        "lost connection to",
        "heartbeat missed",
        "broker unreachable at",
        "ACCESS_REFUSED",
        "TLS certificate is not trusted",
        f"{user}:***@",
        "configuration error",
    ):
        assert evidence in text, f"no {evidence!r} in what was shown"
    record(
        "credentials",
        texts_checked=len(shown),
        log_records=len(caplog.records),
        characters_checked=len(text),
        occurrences_of_password=0,
        checked_at=time.strftime("%Y-%m-%d"),
    )


def _around(text: str, needle: str) -> str:
    at = text.index(needle)
    return text[max(0, at - 300) : at + 100]


async def test_dashboard_never_shows_credentials(
    node: PrivateNode, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker password, the token and the basic-auth password stay out of every route
    (with and without credentials, 401s and the token hand-off included), the event stream,
    the reprs and every log line (aiohttp's access log included)."""
    user, password = f"dash-{uuid.uuid4().hex[:6]}", "Br0ker/" + secrets.token_urlsafe(12)
    token, basic_password = "tok-" + secrets.token_urlsafe(12), "pw-" + secrets.token_urlsafe(12)
    await asyncio.to_thread(node.ctl, "add_user", user, password)
    await asyncio.to_thread(node.ctl, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
    url = _with_credentials(node.url, user, password)
    settings = Settings(url=url, exchange=exchange_name())
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []
    routes = ("", "tasks/t1", "static/dashboard.js", "api/tasks", "api/tasks/t1", "metrics")
    auth = Auth(token=token, basic=("ops", basic_password))
    async with (
        Dashboard(settings, port=0, auth=auth) as dash,
        Publisher(settings=settings) as pub,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        async with asyncio.timeout(10):
            await dash.consuming.wait()
            pub.publish(Report(task_id="t1", state="running", worker_name="w", tags=["a"]))
            while dash.board.get("t1") is None:
                await asyncio.sleep(0.05)
        shown += [repr(dash), repr(dash.auth), repr(dash.settings), str(dash.url)]

        async def fetch(path: str, **kwargs: Any) -> str:
            async with http.get(f"{dash.url}{path}", allow_redirects=False, **kwargs) as resp:
                if path == "events":
                    body = await resp.content.readuntil(b"\n\n") if resp.status == 200 else b""
                else:
                    body = await resp.read()
                return f"{resp.status} {dict(resp.headers)} {body.decode(errors='replace')}"

        for path in (*routes, "events", "healthz"):
            shown.append(await fetch(path))  # no credentials: 401 (healthz: 200)
        bearer = {"Authorization": f"Bearer {token}"}
        for path in (*routes, "events"):
            shown.append(await fetch(path, headers=bearer))
        shown.append(await fetch(f"?token={token}"))  # the hand-off: 303 with a cookie
        shown.append(str(list(http.cookie_jar)))
        basic = {"Authorization": aiohttp.encode_basic_auth("ops", basic_password)}
        shown.append(await fetch("api/tasks", headers=basic))
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    shown += [formatter.format(r) for r in caplog.records]
    text = "\n".join(shown)
    for secret in (password, quote(password, safe=""), token, basic_password):
        assert secret not in text, f"a secret appeared in:\n{_around(text, secret)}"
    # It was all really seen (else the absence above would prove nothing).
    for evidence in ('"t1"', "401", "303", "streamer_board_tasks", f"{user}:***@"):
        assert evidence in text, f"no {evidence!r} in what was shown"
    record("dashboard_credentials", texts_checked=len(shown), characters_checked=len(text))
