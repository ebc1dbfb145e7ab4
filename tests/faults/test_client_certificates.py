"""Logging in with a client certificate (SASL EXTERNAL) through the shared AMQP core.

A private node verifies presented certificates and takes the user name from the certificate's
common name (the rabbitmq_auth_mechanism_ssl plugin). A publisher and the fast receiver with
``cert_file``/``key_file`` and no password in the URL log in by certificate; a certificate
for a user the broker does not know is refused, and a receiver says so at once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from streamer import AuthenticationError, Publisher, Report
from streamer.receiver import Receiver
from streamer.settings import Settings
from tests.broker import PrivateNode, TlsFiles
from tests.faults.conftest import record

USER = "streamer-worker"


@pytest.fixture(scope="module")
def cert_node(ca: trustme.CA) -> Iterator[PrivateNode]:
    server = ca.issue_cert("localhost")
    tls = TlsFiles(
        ca=ca.cert_pem.bytes().decode(),
        cert="".join(blob.bytes().decode() for blob in server.cert_chain_pems),
        key=server.private_key_pem.bytes().decode(),
        client_login=True,
    )
    with PrivateNode(prefix="streamer-certs", tls=tls) as node:
        node.ctl("add_user", USER, secrets.token_hex(16))  # the password is never used
        node.ctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
        yield node


def _client_files(ca: trustme.CA, tmp: Path, common_name: str) -> tuple[str, str]:
    client = ca.issue_cert(f"{common_name}.example", common_name=common_name)
    cert, key = tmp / f"{common_name}.pem", tmp / f"{common_name}.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def _settings(node: PrivateNode, ca_file: str, cert: str, key: str, **more: object) -> Settings:
    url = f"amqps://localhost:{node.tls_port}/"  # no user, no password: the certificate
    return Settings(
        url=url, exchange="streamer.certs", ca_file=ca_file, cert_file=cert, key_file=key, **more
    )  # type: ignore[arg-type]


async def test_publisher_and_receiver_log_in_by_certificate(
    cert_node: PrivateNode, ca: trustme.CA, ca_file: str, tmp_path: Path
) -> None:
    cert, key = _client_files(ca, tmp_path, USER)
    settings = _settings(cert_node, ca_file, cert, key)
    bodies: list[bytes] = []
    receiver = Receiver(lambda ds: bodies.extend(d[3] for d in ds), settings=settings)
    receiving = asyncio.ensure_future(receiver.run())
    try:
        async with asyncio.timeout(15):
            await receiver.consuming.wait()
        async with Publisher(settings=settings) as pub:
            pub.publish(Report(task_id="by-cert", state="finished"))
            assert await pub.flush(10)
            assert pub.stats.confirmed == 1
            users = await asyncio.to_thread(
                cert_node.ctl,
                "-q",
                "--no-table-headers",
                "list_connections",
                "user",
                "auth_mechanism",
                "ssl",
            )
        async with asyncio.timeout(10):
            while not bodies:
                await asyncio.sleep(0.02)
    finally:
        receiver.stop()
        await receiving
    assert b'"task_id":"by-cert"' in bodies[0]
    logins = [line.split("\t") for line in users.strip().splitlines()]
    assert logins == [[USER, "EXTERNAL", "true"]] * 2, logins  # the receiver, the publisher
    record("client_certificate", logins=len(logins), mechanism="EXTERNAL")


async def test_a_certificate_for_an_unknown_user_is_refused(
    cert_node: PrivateNode, ca: trustme.CA, ca_file: str, tmp_path: Path
) -> None:
    cert, key = _client_files(ca, tmp_path, "nobody-here")
    receiver = Receiver(
        lambda ds: None, settings=_settings(cert_node, ca_file, cert, key, reconnect_max=0.5)
    )
    with pytest.raises(AuthenticationError):
        async with asyncio.timeout(15):
            await receiver.run()
    assert not receiver.consuming.is_set()


def test_a_certificate_needs_tls() -> None:
    with pytest.raises(ValueError, match="amqps"):
        Settings(url="amqp://localhost/", cert_file="/x.pem")
    with pytest.raises(ValueError, match="cert_file"):
        Settings(url="amqps://localhost/", key_file="/x.key")
