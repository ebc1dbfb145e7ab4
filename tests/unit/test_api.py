"""The public surface is deliberate: this test fails when it drifts."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

import streamer

pytest_plugins = ["pytester"]


def test_public_api_is_pinned() -> None:
    assert streamer.__all__ == [
        "STATES",
        "TERMINAL_STATES",
        "AuthenticationError",
        "BackgroundPublisher",
        "BrokerError",
        "CallbackError",
        "ConfigError",
        "Consumer",
        "Drop",
        "HaltConsumer",
        "InvalidReport",
        "Message",
        "Nack",
        "Publisher",
        "Report",
        "Settings",
        "Stats",
        "StreamerError",
        "TaskError",
        "TaskReporter",
        "UntrustedCertificate",
        "__version__",
        "consume",
        "decode",
        "encode",
        "load_settings",
        "mask_url",
        "routing_key",
        "subscribe",
    ]
    assert streamer.__all__ == sorted(streamer.__all__, key=lambda n: (not n.isupper(), n))
    for name in streamer.__all__:
        assert hasattr(streamer, name), name


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=60)


def test_version_has_one_source() -> None:
    from streamer._version import __version__

    assert streamer.__version__ == __version__ == importlib.metadata.version("streamer")


def test_importing_installs_no_exit_or_fork_hook() -> None:
    """A program that imports streamer but never publishes is left alone; the first
    publisher installs the hooks that flush at exit (``atexit`` and ``os._exit``) and reset
    after a fork."""
    _run(
        """
        import atexit, os
        hooks = []
        register, at_fork = atexit.register, os.register_at_fork
        def record(kind, func):
            if (getattr(func, "__module__", None) or "").startswith("streamer"):
                hooks.append(f"{kind} {func.__module__}.{func.__qualname__}")
        atexit.register = lambda f, *a, **k: (record("atexit", f), register(f, *a, **k))[1]
        os.register_at_fork = lambda **k: (
            [record("fork", f) for f in k.values()], at_fork(**k))[1]

        real_exit = os._exit
        import streamer, streamer.testing, streamer.embed, streamer.pool
        assert hooks == [], hooks
        assert os._exit is real_exit
        streamer.BackgroundPublisher("amqp://guest:guest@127.0.0.1:1/")
        assert hooks == [
            "atexit streamer.embed._close_all", "fork streamer.embed._after_fork_in_child"
        ], hooks
        assert os._exit is streamer.embed._exit_flushing  # pool children end through it
        assert streamer.embed._os_exit is real_exit
        streamer.BackgroundPublisher("amqp://guest:guest@127.0.0.1:1/")
        assert len(hooks) == 2, hooks  # once per process
        assert streamer.embed._os_exit is real_exit  # wrapped once
        streamer.pool.ConnectionPool(streamer.Settings(), streamer.pool.PoolOwner())
        assert hooks[2:] == ["fork streamer.pool._after_fork_in_child"], hooks
        """
    )


def test_an_empty_pytest_project_runs_no_streamer_code(pytester: pytest.Pytester) -> None:
    """The capture fixture is opt-in: with streamer installed (and plugin autoloading on), a
    project that does not ask for it never imports streamer."""
    pytester.makepyfile(
        """
        import sys

        def test_nothing_of_streamer_loaded():
            loaded = sorted(m for m in sys.modules if m.partition(".")[0] == "streamer")
            assert not loaded, loaded
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
