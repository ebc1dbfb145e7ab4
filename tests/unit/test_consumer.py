"""The consumer's pieces that need no broker: body classification, callback dispatch,
bindings and queues, callback import, and the ``consume`` command's config handling."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streamer.callback import Verdict, dispatch, import_callback, resolve_callback
from streamer.cli import main
from streamer.consumer import COUNTERS, MALFORMED, Message, _with_heartbeat, classify
from streamer.errors import ConfigError, Drop, HaltConsumer, Nack
from streamer.report import Report, encode
from streamer.settings import Settings, load_settings
from streamer.topology import CONSUMER_TABLES, consumer_tables, plan

GOOD = encode(Report(task_id="t1", state="running", seq=7))


def message(task_id: str = "t1") -> Message:
    report = Report(task_id=task_id, state="running")
    return Message(
        report=report,
        routing_key=f"tasks.{task_id}",
        exchange="streamer",
        queue="q",
        body=encode(report),
        properties=None,
    )


# ------------------------------------------------------------------------- classification


def test_classify_decodes_a_report() -> None:
    found = classify(GOOD, "application/json", 1000)
    assert isinstance(found, Report) and found.task_id == "t1" and found.seq == 7


@pytest.mark.parametrize("content_type", [None, "", "application/json; charset=utf-8"])
def test_classify_accepts_missing_or_parameterised_content_type(content_type: str | None) -> None:
    assert isinstance(classify(GOOD, content_type, 1000), Report)


@pytest.mark.parametrize(
    ("body", "content_type", "kind"),
    [
        (GOOD, "text/plain", "content_type"),
        (GOOD, "application/octet-stream", "content_type"),
        (b"not json at all", "application/json", "not_json"),
        (b"", None, "not_json"),
        (b'{"task_id": "t1", "state": "runn', None, "not_json"),
        (b'{"task_id": "\xff", "state": "running"}', None, "not_utf8"),
        (b"\xff\xfe\x00", None, "not_utf8"),
        (b'{"hello": "world"}', None, "not_a_report"),
        (b'{"task_id": "t1", "state": "exploded"}', None, "not_a_report"),
        (b'{"task_id": 5, "state": "running"}', None, "not_a_report"),
        (b"[1, 2, 3]", None, "not_a_report"),
        (b"42", None, "not_a_report"),
        (b" " * 2000 + GOOD, None, "too_large"),
    ],
)
def test_classify_names_what_is_wrong(body: bytes, content_type: str | None, kind: str) -> None:
    assert classify(body, content_type, 1000) == kind
    assert kind in MALFORMED


def test_counters_are_a_closed_set() -> None:
    assert len(set(COUNTERS)) == len(COUNTERS)
    assert set(MALFORMED) <= set(COUNTERS)
    assert {v.value for v in Verdict} <= set(COUNTERS)


def test_message_headers_default_to_empty() -> None:
    assert message().headers == {}


# ------------------------------------------------------------------------------- dispatch


async def test_sync_callback_runs_in_a_worker_thread_and_acks() -> None:
    threads: list[threading.Thread] = []
    outcome = await dispatch(lambda m: threads.append(threading.current_thread()), message())
    assert outcome.verdict is Verdict.ACK and outcome.halt is None and outcome.error is None
    assert threads and threads[0] is not threading.main_thread()


async def test_async_callback_is_awaited_on_the_loop() -> None:
    seen: list[str] = []

    async def callback(m: Message) -> None:
        await asyncio.sleep(0)
        seen.append(m.report.task_id)

    assert (await dispatch(callback, message("a"))).verdict is Verdict.ACK
    assert seen == ["a"]


async def test_instance_with_async_call_is_awaited() -> None:
    class Handler:
        def __init__(self) -> None:
            self.seen = 0

        async def __call__(self, m: Message) -> None:
            self.seen += 1

    handler = resolve_callback(Handler)
    assert (await dispatch(handler, message())).verdict is Verdict.ACK
    assert handler.seen == 1  # type: ignore[attr-defined]


def _raiser(exc: BaseException) -> Any:
    def callback(m: Message) -> None:
        raise exc

    return callback


async def test_signals_map_to_verdicts() -> None:
    assert (await dispatch(_raiser(Nack()), message())).verdict is Verdict.NACK
    assert (await dispatch(_raiser(Drop()), message())).verdict is Verdict.DROP
    halt = HaltConsumer(exit_code=3, reason="done")
    outcome = await dispatch(_raiser(halt), message())
    assert outcome.verdict is Verdict.ACK and outcome.halt is halt
    requeue = await dispatch(_raiser(HaltConsumer(requeue=True)), message())
    assert requeue.verdict is Verdict.NACK and requeue.halt is not None


async def test_other_exception_fails_with_a_logged_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = ValueError("bad")
    outcome = await dispatch(_raiser(error), message("poison"))
    assert outcome.verdict is Verdict.FAIL and outcome.error is error
    [record] = [r for r in caplog.records if r.name == "streamer.callback"]
    assert "tasks.poison" in record.getMessage() and record.exc_info is not None


def test_halt_consumer_defaults() -> None:
    halt = HaltConsumer()
    assert (halt.exit_code, halt.reason, halt.requeue) == (0, "", False)
    assert "exit code 0" in str(halt)


# ---------------------------------------------------------------------- callback objects


def test_resolve_callback_instantiates_a_class_once() -> None:
    class Counter:
        made = 0

        def __init__(self) -> None:
            Counter.made += 1

        def __call__(self, m: Message) -> None: ...

    resolve_callback(Counter)
    assert Counter.made == 1


def test_resolve_callback_refuses_non_callables_and_broken_classes() -> None:
    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("no config")

    with pytest.raises(ConfigError, match="not callable"):
        resolve_callback(42)
    with pytest.raises(ConfigError, match="Broken failed to start: no config"):
        resolve_callback(Broken)


def test_import_callback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cb_mod_unit.py").write_text(
        "class Handler:\n    def handle(self, m): pass\n\ndef on(m): pass\nvalue = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_callback("cb_mod_unit:on").__name__ == "on"
    assert import_callback("cb_mod_unit:Handler").__name__ == "Handler"
    assert callable(import_callback("cb_mod_unit:Handler.handle"))
    for path, says in [
        ("cb_mod_unit", "must look like"),
        (":on", "must look like"),
        ("cb_mod_unit:", "must look like"),
        ("cb_mod_unit_missing:on", "cannot import"),
        ("cb_mod_unit:nothing", "has no attribute"),
        ("cb_mod_unit:value", "not callable"),
    ]:
        with pytest.raises(ConfigError, match=says):
            import_callback(path)


# ----------------------------------------------------------------------- bindings, queues

SETTINGS = Settings(exchange="ex", routing_prefix="jobs")


def test_default_plan_is_an_anonymous_capped_queue_bound_to_everything() -> None:
    queues, bindings = plan(SETTINGS, None, None)
    [queue] = queues
    assert queue.name == "" and queue.exclusive and queue.auto_delete and not queue.durable
    assert queue.arguments == {"x-max-length": 10_000, "x-overflow": "drop-head"}
    [binding] = bindings
    assert (binding.exchange, binding.queue, binding.routing_keys) == ("ex", "", ("jobs.#",))


def test_plan_takes_fedora_messaging_shapes() -> None:
    queues, bindings = plan(
        SETTINGS,
        {"exchange": "amq.topic", "queue": "demo", "routing_keys": "tasks.a"},
        {"demo": {"durable": False, "auto_delete": True, "arguments": {"x-max-length": 5}}},
    )
    [queue] = queues
    assert (queue.name, queue.durable, queue.auto_delete, queue.exclusive) == (
        "demo",
        False,
        True,
        False,
    )
    assert bindings[0].routing_keys == ("tasks.a",) and bindings[0].exchange == "amq.topic"
    # queues without bindings: consume them as they are bound already
    queues, bindings = plan(SETTINGS, None, {"demo": {}})
    assert bindings == [] and queues[0].durable  # fedora-messaging's default


@pytest.mark.parametrize(
    ("bindings", "queues", "says"),
    [
        ([{"queue": "nowhere"}], None, "not in queues"),
        ([{"routing_key": ["x"]}], None, "unknown key routing_key"),
        ([{"routing_keys": [1]}], None, "list of strings"),
        ([{"exchange": ""}], None, "must be strings"),
        (["tasks.#"], None, "expected a table"),
        (None, {"q": {"durable": "yes"}}, "durable must be true or false"),
        (None, {"q": {"ttl": 1}}, "unknown option ttl"),
        (None, {"q": {"arguments": []}}, "arguments must be a table"),
        ([], None, "nothing to consume"),
    ],
)
def test_plan_refuses_bad_shapes(bindings: Any, queues: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        plan(SETTINGS, bindings, queues)


def test_heartbeat_goes_into_the_url_unless_given() -> None:
    assert _with_heartbeat("amqp://u:p@h:5672/", 7).endswith("/?heartbeat=7")
    assert "heartbeat=3" in _with_heartbeat("amqp://h/?heartbeat=3", 7)


# ---------------------------------------------------------------------------- the command


def test_config_tables_are_split_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("STREAMER_")]:
        monkeypatch.delenv(var)  # `make test` exports STREAMER_URL, which would win
    config = tmp_path / "c.toml"
    config.write_text(
        'exchange = "pulp.api.v2"\nheartbeat = 5\nurl = ["amqp://a/", "amqp://b/"]\n'
        '[[bindings]]\nqueue = "q"\nrouting_keys = ["tasks.*"]\n'
        "[queues.q]\ndurable = false\n[qos]\nprefetch_count = 7\n"
    )
    bindings, queues, prefetch = consumer_tables(str(config))
    assert bindings == [{"queue": "q", "routing_keys": ["tasks.*"]}]
    assert queues == {"q": {"durable": False}} and prefetch == 7
    settings = load_settings(str(config), sections=CONSUMER_TABLES)
    assert settings.exchange == "pulp.api.v2" and settings.heartbeat == 5
    assert settings.urls == ("amqp://a/", "amqp://b/")
    assert (
        load_settings(str(config), exchange="override", sections=CONSUMER_TABLES).exchange
        == "override"
    )


def test_config_errors_name_the_real_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('heartbeat = "often"\nbogus = 1\n')
    consumer_tables(str(config))  # no consumer tables: nothing to object to
    with pytest.raises(ConfigError) as info:
        load_settings(str(config), sections=CONSUMER_TABLES)
    assert str(config) in str(info.value)
    config.write_text("[qos]\nprefetch = 3\n")
    with pytest.raises(ConfigError, match="prefetch_count only"):
        consumer_tables(str(config))


def test_cli_bad_callback_is_one_line_and_exit_2() -> None:
    result = CliRunner().invoke(main, ["consume", "--callback", "no_such_module_q:cb"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot import callback module" in lines[0]


def test_malformed_messages_are_logged_once_per_kind_per_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every receiving tool counts malformed messages the same way (streamer.message)."""
    from streamer.message import Malformed

    malformed = Malformed()
    for _ in range(3):
        malformed.note("not_json", "tasks.x", 4, "someone")
    malformed.note("not_utf8", "tasks.x", 4)
    warnings = [r.getMessage() for r in caplog.records if r.name == "streamer.message"]
    assert len(warnings) == 2 and "(not_json)" in warnings[0] and "(not_utf8)" in warnings[1]
    assert "'tasks.x'" in warnings[0] and "'someone'" in warnings[0]
    malformed._logged["not_json"] -= 61  # a minute later
    malformed.note("not_json", "tasks.x", 4)
    warnings = [r.getMessage() for r in caplog.records if r.name == "streamer.message"]
    assert len(warnings) == 3 and "2 more of this kind" in warnings[2]
    assert malformed.counts["not_json"] == 4 and malformed.counts["not_utf8"] == 1
    assert malformed.total == 5
