"""What more than one test folder (and ``tests/broker.py``) needs, defined once.

The ``streamer`` command (where it is, a clean environment for it, ways to run it), the AMQP
probe, a free loopback port, and the dashboard command as a process. No pytest here and, at
import time, nothing beyond the standard library and streamer's own dependencies: this module
is also imported by ``python -m tests.broker`` and by the private node's watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import aiormq

if TYPE_CHECKING:
    from streamer import Publisher

# The console script next to this interpreter (the venv's); see streamer_command().
STREAMER = str(Path(sys.executable).with_name("streamer"))
_ENTRY_POINT = "from streamer.cli import main; main(prog_name='streamer')"


def streamer_command(*args: str) -> list[str]:
    """The command line of ``streamer ARGS``: the console script, else its entry point by hand
    (a checkout that is importable but not installed)."""
    if Path(STREAMER).exists():
        return [STREAMER, *args]
    return [sys.executable, "-c", _ENTRY_POINT, *args]


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without STREAMER_* settings (a developer's STREAMER_CONFIG
    or STREAMER_URL must not leak into a command under test), plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    return {**clean, **(env or {})}


def run_streamer(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``streamer ARGS`` to its end in a clean environment (plus ``env``); output captured."""
    return subprocess.run(
        streamer_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(env),
        cwd=cwd,
        check=False,
    )


def start_streamer(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``streamer ARGS`` in a clean environment (plus ``env``), stdout and stderr piped."""
    return subprocess.Popen(
        streamer_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(env),
    )


async def run_streamer_async(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run ``streamer ARGS`` without blocking the event loop; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *streamer_command(*args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(env),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def amqp_problem(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> str | None:
    """Why no AMQP 0-9-1 broker answers at ``host:port``, or None when one does.

    A broker answers the protocol header with Connection.Start (a method frame of class 10,
    method 10); any other TCP listener, or a broker of another protocol version, does not.
    """
    reply = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            while len(reply) < 11 and (chunk := sock.recv(11 - len(reply))):
                reply += chunk
    except OSError as exc:
        return str(exc)
    if len(reply) == 11 and reply[0] == 1 and reply[7:11] == b"\x00\x0a\x00\x0a":
        return None
    return "the peer does not speak AMQP 0-9-1"


async def delete_from_broker(
    url: str, *, exchanges: tuple[str, ...] = (), queues: tuple[str, ...] = ()
) -> None:
    """Delete a test's queues, then its exchanges (fixture teardown); missing ones are fine."""
    conn = await aiormq.connect(url)
    try:
        channel = await conn.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
    finally:
        await conn.close()


def free_port() -> int:
    """A loopback TCP port nobody listens on now (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def dashboard_command(
    broker_url: str, exchange: str, port: int, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``streamer dashboard`` as a process; yields it and its first stderr line, then stops it
    with SIGTERM (its exit code is left for the test to check)."""
    proc = await asyncio.create_subprocess_exec(
        *streamer_command(
            "dashboard", "--url", broker_url, "-e", exchange, "--port", str(port), *args
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(env),
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(15):
            line = (await proc.stderr.readline()).decode()
        yield proc, line
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                await proc.wait()


@contextlib.asynccontextmanager
async def running_dashboard(
    broker_url: str, exchange: str, port: int, env: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """``streamer dashboard`` on ``port`` (``env`` added to its environment), healthy
    (consuming); yields its URL (ending in ``/``) and checks that it exits 0 on SIGTERM."""
    url = f"http://127.0.0.1:{port}/"
    async with dashboard_command(broker_url, exchange, port, env=env) as (proc, _):
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, url)
        yield url
    assert proc.returncode == 0


async def wait_healthy(http: aiohttp.ClientSession, url: str, timeout: float = 15) -> None:
    """Wait until the dashboard at ``url`` (ending in ``/``) answers ``/healthz`` with 200."""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)


async def send_reports(
    pub: Publisher, tasks: list[str], seqs: range, final: str | None = None
) -> None:
    """One report per task per seq (running, or ``final`` for the last), all confirmed; slow
    enough that the publisher never coalesces a task's reports (every seq is sent)."""
    from streamer import Report

    last = seqs[-1]
    for seq in seqs:
        for task_id in tasks:
            state = final if final is not None and seq == last else "running"
            pub.publish(
                Report(
                    task_id=task_id,
                    state=state,
                    progress_report={"content": {"items_done": seq, "items_total": last}},
                )
            )
        assert await pub.throttle(max_pending=len(tasks), timeout=30)  # (none coalesced)
    assert await pub.flush(timeout=30)
