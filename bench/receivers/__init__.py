"""The receivers bench/receive.py compares, by name, and the entry point of its children.

Layout: broker.py (the parent's exchanges, probe and gated drain queue), feeder.py (the one
publisher), launch.py (starting and counting a receiver process), children.py and peers.py
(the receivers that are the bench's own code), rounds.py (one run in each mode) and report.py
(medians, ratios, tables, the acceptance checks).
"""

from __future__ import annotations

from typing import Any

#: name -> what runs, for the table's notes and the JSON.
RECEIVERS: dict[str, str] = {
    "dashboard": "`streamer dashboard` process (drain: --config [[bindings]]/[queues] table)",
    "watch": "`streamer watch`, stdout not a TTY (drain: streamer.watch.watch in a child)",
    "listen": "`streamer listen --json` (drain: streamer.cli.listen._listen, json, /dev/null)",
    "watcher": "loadtest.watcher.Watcher, the harness watcher (its own 50,000 cap)",
    "aio-pika": "aio-pika queue.consume(callback, no_ack=True), prefetch 1000",
    "pika": "pika BlockingConnection basic_consume(auto_ack=True), prefetch 1000",
    "raw": "streamer.amqp open_connection + consume(no_ack=True), on_deliveries only counts",
    "aio-pika-ack": "aio-pika queue.consume + message.process() (ack each), prefetch 1000",
    "pika-ack": "pika basic_consume + basic_ack each, prefetch 1000",
}
DEFAULT_RECEIVERS = ("dashboard", "watch", "listen", "watcher", "aio-pika", "pika", "raw")
STREAMER_TOOLS = ("dashboard", "watch", "listen")


def child_main(role: str, spec: dict[str, Any]) -> int:
    """Run one child (the feeder, or one of the bench's own receivers) until SIGTERM/EOF."""
    if role == "feeder":
        from .feeder import feeder_main

        return feeder_main(spec)

    from . import children, peers

    runners: dict[str, Any] = {
        "raw": children.run_raw,
        "watcher": children.run_watcher,
        "listen-tool": children.run_listen_tool,
        "watch-tool": children.run_watch_tool,
        "aio-pika": peers.run_aio_pika,
        "pika": peers.run_pika,
        "aio-pika-ack": lambda s, st: peers.run_aio_pika(s, st, ack=True),
        "pika-ack": lambda s, st: peers.run_pika(s, st, ack=True),
    }
    status = children.Status(spec["status"], spec.get("expected", 0))
    try:
        runners[role](spec, status)
    except BaseException as exc:
        status.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        status.write()
    return 0
