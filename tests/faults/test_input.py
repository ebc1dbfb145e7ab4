"""Bad input: the publish API refuses it with a clear error and enqueues nothing; the
consumer side decodes anything without breaking; the command line turns configuration
mistakes into one line and exit code 2.

Fixed cases live in tests/integration/test_publisher_input.py, tests/unit/test_consumer.py
and tests/unit/test_settings.py; here the inputs are generated (hypothesis) or come from a
foreign client (pika).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer import BackgroundPublisher, InvalidReport, Publisher, Report
from streamer.consumer import MALFORMED, Consumer, Message, classify
from streamer.report import STATES, encode
from streamer.settings import Settings
from tests.broker import PrivateNode
from tests.faults.conftest import LONG, record
from tests.helpers import run_streamer

EXAMPLES = 2000 if LONG else 300

anything = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
# Any Python value, including ones JSON cannot carry (sets, objects, huge ints, NaN).
values = st.recursive(
    anything | st.builds(object) | st.sets(st.integers(), max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=15,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
# Each mixes plausible input (drawn more often) with anything at all.
good_ids = st.text(st.characters(codec="utf-8", exclude_characters=".*#"), min_size=1, max_size=40)
task_ids = st.one_of(
    good_ids, good_ids, good_ids, st.text(max_size=300), st.integers(), st.lists(st.text())
)
states = st.sampled_from(sorted(STATES)) | st.text(max_size=12) | st.none() | st.lists(st.text())
reports = st.builds(
    Report,
    task_id=task_ids,
    state=st.sampled_from(sorted(STATES)) | st.sampled_from(sorted(STATES)) | states,
    progress_report=st.dictionaries(st.text(max_size=8), json_values | values, max_size=4),
    result=json_values | json_values | values,
)


@pytest.mark.timeout(300)
async def test_publish_accepts_good_reports_and_refuses_the_rest_cleanly(
    node: PrivateNode,
) -> None:
    """Whatever is passed in: either ``InvalidReport`` and nothing counted, or accepted and
    then readable by any streamer consumer. Never another exception."""
    exchange = f"streamer.faults.input.{uuid.uuid4().hex[:8]}"
    outcomes = {"accepted": 0, "refused": 0}
    bg = BackgroundPublisher(node.url, exchange, max_body=4096)
    async with Publisher(node.url, exchange, max_body=4096) as pub:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        @given(reports)
        def check(report: Report) -> None:
            before = pub.stats.published
            try:
                pub.publish(report)
            except InvalidReport:
                outcomes["refused"] += 1
                assert pub.stats.published == before
                with pytest.raises(InvalidReport):
                    bg.publish(report)
                return
            outcomes["accepted"] += 1
            assert pub.stats.published == before + 1
            latest = pub._tasks[report.task_id].latest
            assert latest is not None
            assert isinstance(classify(latest.body, "application/json", 10**6), Report)
            bg.publish(report)

        check()
        assert await pub.flush(10)
        assert pub.stats.balanced and pub.stats.published == outcomes["accepted"]
    await asyncio.to_thread(bg.close)
    assert bg.stats.balanced and bg.stats.published == outcomes["accepted"]
    assert outcomes["accepted"] and outcomes["refused"], outcomes  # both paths were taken
    record("publish_input_fuzz", examples=EXAMPLES, **outcomes)


bodies = (
    st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | st.builds(
        msgspec.json.encode,
        st.dictionaries(st.sampled_from(["task_id", "state", "seq", "tags", "x"]), json_values),
    )
    | st.builds(lambda r: encode(r)[: len(encode(r)) // 2], st.builds(Report, task_id=st.text()))
    | st.builds(encode, st.builds(Report, task_id=good_ids, state=st.sampled_from(sorted(STATES))))
)
header_values = st.integers(-(2**63), 2**63 - 1) | st.text()
content_types = st.none() | st.sampled_from(["application/json", "text/plain", ""]) | st.text()


@settings(max_examples=EXAMPLES * 5, deadline=None)
@given(bodies, content_types, st.integers(0, 400))
def test_decoding_never_raises(body: bytes, content_type: str | None, max_body: int) -> None:
    found = classify(body, content_type, max_body)
    assert isinstance(found, Report) or found in MALFORMED


@pytest.mark.timeout(300)
async def test_consumer_survives_what_a_foreign_client_sends(node: PrivateNode) -> None:
    """pika publishes generated bodies, content types and headers: every message is either
    delivered as a report or counted as malformed, and consuming goes on."""
    exchange = f"streamer.faults.foreign.{uuid.uuid4().hex[:8]}"
    delivered: list[Report] = []
    sent = 0

    def on_message(message: Message) -> None:
        assert isinstance(message.report, Report)
        delivered.append(message.report)

    consumer = Consumer(on_message, settings=Settings(url=node.url, exchange=exchange))
    running = asyncio.ensure_future(consumer.run())
    async with asyncio.timeout(10):
        await consumer.consuming.wait()

    def inject() -> None:
        nonlocal sent
        conn = pika.BlockingConnection(pika.URLParameters(node.url))
        with contextlib.closing(conn):
            channel = conn.channel()

            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
            @given(
                bodies,
                content_types.filter(lambda c: c is None or len(c.encode()) < 256),
                st.none() | st.dictionaries(st.text(max_size=5), header_values),
            )
            def send(body: bytes, content_type: str | None, headers: Any) -> None:
                nonlocal sent
                props = pika.BasicProperties(content_type=content_type, headers=headers)
                channel.basic_publish(exchange, "tasks.fuzz", body, props)
                sent += 1

            send()
            channel.basic_publish(
                exchange, "tasks.good", encode(Report(task_id="good", state="finished"))
            )
            sent += 1

    try:
        await asyncio.to_thread(inject)
        counters = consumer.counters
        async with asyncio.timeout(30):
            while counters["delivered"] + sum(counters[k] for k in MALFORMED) < sent:
                await asyncio.sleep(0.05)
        assert consumer.consuming.is_set()
    finally:
        consumer.stop()
        await running
    assert delivered and delivered[-1].task_id == "good"
    assert counters["reconnects"] == 0 and counters["failed"] == 0, counters
    record(
        "foreign_messages",
        sent=sent,
        delivered=counters["delivered"],
        malformed={k: counters[k] for k in MALFORMED},
    )


def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = run_streamer(*args, env=env, cwd=tmp_path)
    assert done.stdout == "", done.stdout
    return done.returncode, done.stderr


CONFIGS = {
    "unknown key": ("exchnage = 'x'\n", "unknown setting exchnage"),
    "wrong type": ("channels = 'two'\n", "channels='two'"),
    "bad value": ("max_pending = 0\n", "max_pending must be at least 1"),
    "bad url": ("url = 'http://u:hunter2@host/'\n", "is not a broker URL"),
    "not toml": ("url = = =\n", "is not valid TOML"),
}


@pytest.mark.parametrize("command", ["listen", "watch", "simulate", "consume"])
def test_cli_config_errors_are_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    """Every command, every kind of configuration mistake: one line on stderr, exit code 2,
    no traceback, no password."""
    extra = ["--callback", "json:dumps"] if command == "consume" else []
    cases: list[tuple[list[str], dict[str, str], str]] = []
    for name, (text, says) in CONFIGS.items():
        path = tmp_path / f"{name.replace(' ', '_')}.toml"
        path.write_text(text)
        cases.append((["--config", str(path)], {}, says))
    cases += [
        (["--url", "amqp://u:hunter2@host:99999/"], {}, "Port out of range"),
        (["--url", "amqp://u:hunter2@/"], {}, "is not a broker URL"),
        ([], {"STREAMER_CHANNELS": "x"}, "from environment"),
        ([], {"STREAMER_CHANELS": "2"}, "STREAMER_CHANELS"),
        (["--config", str(tmp_path / "missing.toml")], {}, "does not exist"),
    ]
    with ThreadPoolExecutor(4) as pool:  # each run is a fresh interpreter: run a few at once
        runs = pool.map(lambda case: _cli(tmp_path, command, *extra, *case[0], env=case[1]), cases)
        results = list(runs)
    for (args, env, says), (code, err) in zip(cases, results, strict=True):
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (args, env, err)
        assert len(lines) == 1 and says in lines[0], (args, env, err)
        assert lines[0].startswith("streamer: "), err
        assert "hunter2" not in err
    record("cli_config_errors", **{f"{command}_cases": len(cases)})


@pytest.mark.parametrize(
    ("report", "says"),
    [
        (Report(task_id=["a"], state="running"), "task_id must be a string, got list"),  # type: ignore[arg-type]
        (Report(task_id="a", state=["running"]), "unknown state \\['running'\\]"),  # type: ignore[arg-type]
        (Report(task_id={"a": 1}, state="running"), "task_id must be a string, got dict"),  # type: ignore[arg-type]
    ],
)
async def test_unhashable_ids_and_states_are_clear_errors(
    node: PrivateNode, report: Report, says: str
) -> None:
    """Found by the fuzzing above: these used to escape as a bare ``TypeError``."""
    exchange = f"streamer.faults.input.{uuid.uuid4().hex[:8]}"
    async with Publisher(node.url, exchange) as pub:
        with pytest.raises(InvalidReport, match=says):
            pub.publish(report)
        assert pub.stats.published == 0
    bg = BackgroundPublisher(node.url, exchange)
    with pytest.raises(InvalidReport, match=says):
        bg.publish(report)
    assert bg.stats.published == 0
    await asyncio.to_thread(bg.close)
