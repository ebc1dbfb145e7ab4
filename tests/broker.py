"""Private RabbitMQ nodes for tests and demos (standard library, streamer and tests/helpers.py).

Tests that stop, restart or alarm a broker must never do it to the shared one (127.0.0.1:5672),
so they get a private node: about 5 s to start, 1.3 s to stop. On Debian the node drops root
privileges to the ``rabbitmq`` user, so its data dir must belong to that user or it silently
fails to start; and ``/usr/sbin/rabbitmq*`` run the real tool through ``su -c``, which moves it
into a new session where a timed-out call cannot be killed, so as root we use ``runuser``.

``python -m tests.broker url`` prints a usable AMQP URL (and nothing else on stdout), starting a
node if needed; ``python -m tests.broker stop`` stops the node that ``url`` started.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from streamer.settings import mask_url

try:
    from tests.helpers import amqp_problem, free_port
except ImportError:  # run as a script (the watchdog: python -I tests/broker.py _watch ...)
    from helpers import amqp_problem, free_port  # type: ignore[no-redef]

log = logging.getLogger(__name__)

SHARED_URL = "amqp://guest:guest@127.0.0.1:5672/"
STATE_FILE = Path(tempfile.gettempdir()) / "streamer-broker.json"
_DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin"])
_CONNECTION_FIELDS = ("name", "peer_port", "state", "channels")
_counter = itertools.count(1)
# A TLS listener next to the plain one; clients are not asked for certificates, unless the
# node logs clients in by them (EXTERNAL): then a presented certificate is verified and its
# common name is the user name.
_TLS_CONFIG = """\
listeners.ssl.default = 127.0.0.1:{port}
ssl_options.cacertfile = {d}/ca.pem
ssl_options.certfile = {d}/cert.pem
ssl_options.keyfile = {d}/key.pem
ssl_options.verify = {verify}
ssl_options.fail_if_no_peer_cert = false
"""
_EXTERNAL_CONFIG = """\
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = EXTERNAL
ssl_cert_login_from = common_name
"""


@dataclass(frozen=True)
class TlsFiles:
    """PEM text for a node's TLS listener: the CA, the server certificate and its key.

    ``client_login``: log clients in by their certificate (SASL EXTERNAL, the
    rabbitmq_auth_mechanism_ssl plugin) besides passwords.
    """

    ca: str
    cert: str
    key: str
    client_login: bool = False


def _tool(name: str) -> list[str] | None:
    """Command prefix for a RabbitMQ CLI tool, or None when RabbitMQ is not installed."""
    if os.geteuid() == 0 and (_DEBIAN_BIN / name).exists() and shutil.which("runuser"):
        return ["runuser", "-u", "rabbitmq", "--", str(_DEBIAN_BIN / name)]
    found = shutil.which(name, path=_SEARCH_PATH)
    return [found] if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an unreaped zombie (some container inits never reap) has already freed its ports
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a CLI tool in its own process group, so a timeout also kills the Erlang VM it runs."""
    pipe, cwd = subprocess.PIPE, tempfile.gettempdir()  # cwd: readable by the rabbitmq user
    with subprocess.Popen(
        argv, stdout=pipe, stderr=pipe, text=True, cwd=cwd, start_new_session=True
    ) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise RuntimeError(f"{' '.join(argv)} timed out after {timeout:.0f} s") from None
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


class PrivateNode:
    """A throwaway RabbitMQ node listening only on 127.0.0.1, with its own ports, data and log.

    Unless ``keep_running``, the node is stopped and its data dir deleted by :meth:`close`, at
    interpreter exit (atexit), or, if this process dies without running atexit (SIGKILL,
    ``os._exit``), by a watchdog process that sees a pipe we hold close. ``extra_config`` is
    appended to rabbitmq.conf; ``tls`` adds a TLS listener on ``tls_port`` (``tls_url``).
    guest can log in without touching ``loopback_users``, as we connect over loopback.
    ``serving_at`` is the monotonic time the last :meth:`start` first saw the node answer AMQP
    (fault tests measure reconnect times from it).
    """

    def __init__(
        self,
        *,
        prefix: str = "streamer-test",
        port: int | None = None,
        dist_port: int | None = None,
        extra_config: str = "",
        keep_running: bool = False,
        tls: TlsFiles | None = None,
    ) -> None:
        self.name = f"{prefix}-{os.getpid()}-{next(_counter)}@localhost"
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        self.extra_config = extra_config
        self.keep_running = keep_running
        self.tls = tls
        self.tls_port = free_port() if tls is not None else 0
        self.data_dir: Path | None = None
        self.serving_at = 0.0
        self._watchdog: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrivateNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def tls_url(self) -> str:
        """The TLS listener, by the name its certificate is issued for (``localhost``)."""
        if self.tls is None:
            raise RuntimeError("this node has no TLS listener (pass tls=TlsFiles(...))")
        return f"amqps://guest:guest@localhost:{self.tls_port}/"

    @property
    def pid(self) -> int | None:
        """The node's OS pid, from the pid file it writes early in boot and removes on stop."""
        text = self._read("pid").strip()
        return int(text) if text.isdigit() else None

    def is_running(self) -> bool:
        pid = self.pid
        return pid is not None and _alive(pid)

    def start(self, timeout: float = 60) -> None:
        """Start the node (no-op if running) and return once it serves AMQP clients.

        Poll the AMQP port (cheap) before ``await_startup``: that fails at once while the node
        has not yet registered with epmd.
        """
        server = _tool("rabbitmq-server")
        if server is None:
            raise RuntimeError("rabbitmq-server is not installed")
        if self.is_running():
            return
        data_dir = self._prepare()
        self._arm()
        deadline = time.monotonic() + timeout
        log_name = f"{self.name}.log"
        seen = len(self._read("log", log_name))  # a previous boot's BOOT FAILED does not count
        with open(data_dir / "startup.log", "w") as out:
            rc = subprocess.call(
                [*server, "-detached"],
                env=self._env(data_dir),
                cwd=data_dir,
                stdout=out,
                stderr=out,
                start_new_session=True,
                timeout=timeout,
            )
        if rc:
            self._fail(f"rabbitmq-server -detached exited with status {rc}")
        while amqp_problem(self.port, timeout=1) is not None:
            if time.monotonic() > deadline:
                self._fail(f"not serving AMQP on port {self.port} after {timeout:.0f} s")
            if "\nSlogan: " in self._read("erl_crash.dump") or (self.pid and not self.is_running()):
                self._fail("the Erlang VM exited")
            if "BOOT FAILED" in self._read("log", log_name)[seen:]:
                self._fail("BOOT FAILED")
            time.sleep(0.05)
        self.serving_at = time.monotonic()
        self.ctl("await_startup", timeout=max(5.0, deadline - time.monotonic()))

    def stop(self, timeout: float = 30) -> None:
        """Stop the node and wait for its process to exit, so its ports are free; idempotent.

        ``rabbitmqctl stop PIDFILE`` would wait too, but hangs forever once the pid file is gone
        (the node is already stopped), so we watch the pid ourselves.
        """
        pid = self.pid
        if pid is None or not _alive(pid):
            return
        try:
            self.ctl("stop", timeout=timeout)
        except RuntimeError as exc:  # e.g. a node that is already halting; the pid tells
            log.warning("%s", str(exc).partition("\n")[0])
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                log.warning("node %s ignored stop; killing pid %d", self.name, pid)
                os.kill(pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.05)

    def kill(self) -> None:
        """Crash the node (SIGKILL, no goodbye to clients) and wait until it is gone."""
        pid = self.pid
        if pid is None or not _alive(pid):
            return
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.02)

    def join(self, other: PrivateNode) -> None:
        """Make this node a member of ``other``'s cluster (wiping this node's own data).

        Both nodes run as the ``rabbitmq`` user and so share its Erlang cookie.
        """
        self.ctl("stop_app")
        self.ctl("reset")
        self.ctl("join_cluster", other.name)
        self.ctl("start_app")
        self.ctl("await_startup")

    def cluster_nodes(self) -> list[str]:
        """The running members of this node's cluster, as the node itself sees them."""
        status = json.loads(self.ctl("-q", "cluster_status", "--formatter", "json"))
        return sorted(status["running_nodes"])

    def restart(self, timeout: float = 60) -> None:
        """Stop and start again with the same ports and data, like a broker restart."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop the node, delete its data dir and dismiss the watchdog; idempotent."""
        atexit.unregister(self.close)
        self.stop()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
        if self._watchdog is not None:
            with contextlib.suppress(OSError), self._watchdog as watchdog:
                watchdog.stdin.write(b"done")  # type: ignore[union-attr]
            self._watchdog = None

    def ctl(self, *args: str, timeout: float = 30) -> str:
        """Run ``rabbitmqctl -n NODE *args``; return stdout, raise RuntimeError with stderr."""
        tool = _tool("rabbitmqctl")
        if tool is None:
            raise RuntimeError("rabbitmqctl is not installed")
        res = _run([*tool, "-n", self.name, *args], timeout)
        if res.returncode:
            detail = (res.stderr or res.stdout).strip()
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({res.returncode}): {detail}")
        return res.stdout

    def connections(self) -> list[dict[str, Any]]:
        """Client connections (name, peer_port, state, channels), e.g. for leak tests."""
        fields = _CONNECTION_FIELDS
        return list(json.loads(self.ctl("-q", "list_connections", *fields, "--formatter", "json")))

    def client_names(self) -> list[str]:
        """The ``connection_name`` each connected client gave (client properties)."""
        out = self.ctl("-q", "list_connections", "client_properties", "--formatter", "json")
        names = []
        for conn in json.loads(out or "[]"):
            props = {name: value for name, _, value in conn["client_properties"]}
            names.append(str(props.get("connection_name", "")))
        return sorted(names)

    def channels_count(self) -> int:
        return len(json.loads(self.ctl("-q", "list_channels", "pid", "--formatter", "json")))

    def set_memory_alarm(self) -> None:
        """Raise a memory alarm (1-byte watermark): the broker blocks publishing connections."""
        self.ctl("set_vm_memory_high_watermark", "absolute", "1")

    def clear_memory_alarm(self) -> None:
        """Go back to the default 0.4 relative watermark, which clears the alarm at once."""
        self.ctl("set_vm_memory_high_watermark", "0.4")

    def _prepare(self) -> Path:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix=f"{self.name.partition('@')[0]}-"))
        conf = f"listeners.tcp.1 = 127.0.0.1:{self.port}\n{self.extra_config}\n"
        files = {"rabbitmq.conf": conf, "plugins": "[].\n"}
        if self.tls is not None:
            files |= {"ca.pem": self.tls.ca, "cert.pem": self.tls.cert, "key.pem": self.tls.key}
            verify = "verify_peer" if self.tls.client_login else "verify_none"
            files["rabbitmq.conf"] += _TLS_CONFIG.format(
                port=self.tls_port, d=self.data_dir, verify=verify
            )
            if self.tls.client_login:
                files["rabbitmq.conf"] += _EXTERNAL_CONFIG
                files["plugins"] = "[rabbitmq_auth_mechanism_ssl].\n"
        for file, text in files.items():
            (self.data_dir / file).write_text(text)
        for stale in ("pid", "erl_crash.dump"):  # left by a crash; would fake a failed start
            (self.data_dir / stale).unlink(missing_ok=True)
        if os.geteuid() == 0:
            for path in (self.data_dir, *(self.data_dir / file for file in files)):
                with contextlib.suppress(LookupError):  # no rabbitmq user: nobody to hand it to
                    shutil.chown(path, "rabbitmq", "rabbitmq")
        return self.data_dir

    def _env(self, d: Path) -> dict[str, str]:
        """Server environment; inherited RABBITMQ_* variables could point at the shared node."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.setdefault("ERL_EPMD_ADDRESS", "127.0.0.1")
        own = {
            "NODENAME": self.name,
            "NODE_PORT": self.port,
            "DIST_PORT": self.dist_port,
            "MNESIA_BASE": d / "mnesia",
            "LOG_BASE": d / "log",
            "PID_FILE": d / "pid",
            "ENABLED_PLUGINS_FILE": d / "plugins",
            "CONFIG_FILE": d / "rabbitmq",
            "ADVANCED_CONFIG_FILE": d / "advanced.config",
            "SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        return env | {f"RABBITMQ_{key}": str(value) for key, value in own.items()}

    def _read(self, *parts: str) -> str:
        with contextlib.suppress(OSError):
            if self.data_dir is not None:
                return self.data_dir.joinpath(*parts).read_text(errors="replace")
        return ""

    def _fail(self, reason: str) -> NoReturn:
        """Clean up and raise with the evidence: errors before logging is set up (e.g. a bad
        rabbitmq.conf) only reach the crash dump's slogan; the log's first errors say why."""
        crash = [ln for ln in self._read("erl_crash.dump").splitlines()[:5] if "Slogan" in ln]
        lines = self._read("log", f"{self.name}.log").splitlines()
        errors = [ln for ln in lines if "[error]" in ln or "[critical]" in ln][:12]
        startup = self._read("startup.log").splitlines()[-10:]
        self.stop(timeout=10)
        evidence = "\n".join([*crash, *startup, *errors, "[...]", *lines[-10:]])
        raise RuntimeError(f"RabbitMQ node {self.name} did not start: {reason}\n{evidence}")

    def _arm(self) -> None:
        if self.keep_running or self._watchdog is not None:
            return
        atexit.register(self.close)
        argv = [sys.executable, "-I", __file__, "_watch", json.dumps(self._state())]
        null = subprocess.DEVNULL
        self._watchdog = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=null, stderr=null, start_new_session=True
        )

    def _state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "dist_port": self.dist_port,
            "data_dir": str(self.data_dir),
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> PrivateNode:
        node = cls(port=state["port"], dist_port=state["dist_port"], keep_running=True)
        node.name, node.data_dir = state["name"], Path(state["data_dir"])
        return node


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    """Serialise ensure_url/stop, so that concurrent ``make test`` runs share one node."""
    with open(STATE_FILE.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _recorded_node() -> PrivateNode | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return PrivateNode._from_state(json.loads(STATE_FILE.read_text()))
    return None


def _require_server() -> None:
    """Install RabbitMQ with apt when we are allowed to (root), else say what to do."""
    if _tool("rabbitmq-server"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(
            "rabbitmq-server is not installed: run `sudo apt-get install -y rabbitmq-server`, "
            "or set STREAMER_URL=amqp://USER:PASSWORD@HOST:PORT/ to use another broker"
        )
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "rabbitmq-server"]):
        log.warning("rabbitmq-server is missing; running: %s", " ".join(cmd))
        subprocess.run(cmd, check=True, stdout=2, env=env)


def ensure_url() -> str:
    """Return an AMQP URL for ``make test`` / ``make demo``, starting a broker only if needed.

    Order: ``$STREAMER_URL``; the shared broker on 127.0.0.1:5672 if it speaks AMQP; else a
    private node that outlives this process (recorded in STATE_FILE), so that repeated runs do
    not each pay its startup time.
    """
    if url := os.environ.get("STREAMER_URL"):
        log.info("using STREAMER_URL %s", mask_url(url))
        return url
    if amqp_problem(5672) is None:
        log.info("using the shared broker at %s", mask_url(SHARED_URL))
        return SHARED_URL
    with _state_lock():
        node = _recorded_node()
        if node is not None:
            if node.is_running() and amqp_problem(node.port) is None:
                log.info("reusing private node %s at %s", node.name, mask_url(node.url))
                return node.url
            node.close()
        _require_server()
        node = PrivateNode(prefix="streamer-dev", keep_running=True)
        log.info("starting private node %s on port %d", node.name, node.port)
        node.start()
        STATE_FILE.write_text(json.dumps(node._state()))
        log.info("private node ready at %s", mask_url(node.url))
        return node.url


def stop_recorded_node() -> bool:
    """Stop and delete the node that ensure_url started; False if there was none."""
    with _state_lock():
        node = _recorded_node()
        if node is not None:
            node.close()
            log.info("stopped private node %s", node.name)
        STATE_FILE.unlink(missing_ok=True)
        return node is not None


def node_for_url(url: str) -> str | None:
    """The rabbitmqctl node name serving ``url`` when it is our recorded private node."""
    node = _recorded_node()
    port = urlsplit(url).port or 5672
    return node.name if node is not None and node.port == port else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_watch"]:  # watchdog: EOF without "done" means our parent died uncleanly
        if not sys.stdin.buffer.read():
            PrivateNode._from_state(json.loads(argv[1])).close()
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.broker", description=__doc__)
    parser.add_argument("command", choices=["url", "stop"])
    command = parser.parse_args(argv).command
    logging.basicConfig(level=logging.INFO, format="broker: %(message)s", stream=sys.stderr)
    if command == "url":
        print(ensure_url())
    elif not stop_recorded_node():
        log.info("no private node recorded in %s", STATE_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
