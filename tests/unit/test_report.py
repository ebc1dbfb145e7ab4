"""Report schema, codec and routing-key validation (no network)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer import STATES, InvalidReport, Report, TaskError, decode, encode, routing_key

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

reports = st.builds(
    Report,
    task_id=st.text(
        st.characters(blacklist_characters=".*#", blacklist_categories=("Zs", "Cc", "Cs")),
        min_size=1,
        max_size=40,
    ),
    state=st.sampled_from(sorted(STATES)),
    task_type=st.none() | st.text(max_size=30),
    progress_report=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    result=json_values,
    error=st.none()
    | st.builds(TaskError, code=st.text(max_size=10), description=st.text(max_size=30)),
    spawned_tasks=st.lists(st.text(max_size=10), max_size=3),
    tags=st.lists(st.text(max_size=10), max_size=3),
    start_time=st.none() | st.datetimes(timezones=st.just(UTC)),
    seq=st.integers(0, 2**40),
    sent_at=st.floats(0, 2e9),
)


@given(reports)
def test_encode_decode_round_trip(report: Report) -> None:
    assert decode(encode(report)) == report


def test_wire_names_follow_pulp() -> None:
    doc = msgspec.json.decode(encode(Report(task_id="t", state="running")))
    assert set(doc) == {
        "task_id",
        "task_type",
        "state",
        "progress_report",
        "result",
        "error",
        "spawned_tasks",
        "tags",
        "worker_name",
        "queue",
        "group_id",
        "start_time",
        "finish_time",
        "seq",
        "sent_at",
    }


def test_times_are_iso_8601() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    doc = msgspec.json.decode(encode(Report(task_id="t", state="running", start_time=when)))
    assert doc["start_time"] == "2026-01-02T03:04:05Z"


def test_unserialisable_report_is_a_clear_error() -> None:
    with pytest.raises(InvalidReport, match="not serialisable"):
        encode(Report(task_id="t", state="running", progress_report={"x": object()}))


def test_decode_rejects_unknown_state() -> None:
    with pytest.raises(msgspec.ValidationError, match="state"):
        decode(b'{"task_id": "t", "state": "exploded"}')


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        ("", "must not be empty"),
        ("a.b", "'.'"),
        ("a*", "'\\*'"),
        ("#", "'#'"),
        ("a b", "' '"),
        ("tab\there", "'\\\\t'"),
        ("x" * 250, "255"),
        ("\udc80", "not valid UTF-8"),
        (42, "must be a string"),
    ],
)
def test_bad_task_ids(task_id: object, message: str) -> None:
    with pytest.raises(InvalidReport, match=message):
        routing_key(task_id)


def test_good_task_id() -> None:
    assert routing_key("0f3c-uuid_like:42") == "tasks.0f3c-uuid_like:42"
    assert routing_key("x" * 249) == "tasks." + "x" * 249  # exactly 255 bytes


def test_seq_outside_zero_to_max_seq_is_malformed_by_its_own_kind() -> None:
    from streamer.message import MALFORMED, classify
    from streamer.report import MAX_SEQ

    assert "bad_seq" in MALFORMED
    body = '{{"task_id": "t", "state": "running", "seq": {}}}'
    for seq in ("-1", str(2**63 - 1), "1e26", str(MAX_SEQ + 1), '"7"', "1.5"):
        assert classify(body.format(seq).encode(), "application/json", 1_000) == "bad_seq", seq
    for seq in ("0", "1", str(MAX_SEQ)):
        assert isinstance(classify(body.format(seq).encode(), None, 1_000), Report), seq
    assert classify(b'{"task_id": "t", "state": "nope"}', None, 1_000) == "not_a_report"


@given(reports)
def test_a_received_report_is_the_sent_one_with_its_progress_read_later(report: Report) -> None:
    """The viewing tools' decoding (progress left as JSON text) loses nothing: read, it is
    the report that was sent, and re-encoded it is the same JSON."""
    from streamer.report import Received, decode_received, progress_of

    body = encode(report)
    received = decode_received(body)
    assert isinstance(received, Received) and isinstance(received, Report)
    assert progress_of(received) == progress_of(report) == decode(body).progress_report
    assert bool(received.progress_report) == bool(report.progress_report)
    assert msgspec.json.decode(bytes(received.result)) == decode(body).result
    assert encode(received) == body
    fields = msgspec.structs.asdict(received)
    fields.update(progress_report=progress_of(received), result=decode(body).result)
    assert fields == msgspec.structs.asdict(decode(body))


def test_the_viewing_tools_tell_malformed_bodies_as_every_receiver_does() -> None:
    """A progress_report that is not an object is not a report, for the lazy decoder too
    (and an empty object says nothing of progress)."""
    from streamer.message import classify
    from streamer.report import decode_received

    body = '{{"task_id": "t", "state": "running", "progress_report": {}}}'
    for progress in ("5", '"x"', "[1]", "null", "true"):
        raw = body.format(progress).encode()
        assert classify(raw, None, 1_000, decode_received) == "not_a_report", progress
        assert classify(raw, None, 1_000) == "not_a_report", progress
    for empty in ("{}", "{ }", "{\n\t}"):
        found = classify(body.format(empty).encode(), None, 1_000, decode_received)
        assert isinstance(found, Report) and not found.progress_report, empty
    bad_seq = b'{"task_id": "t", "state": "running", "seq": -1}'
    assert classify(bad_seq, None, 1_000, decode_received) == "bad_seq"
    assert classify(b'{"task_id": "t", "state": "nope"}', None, 1_000, decode_received) == (
        "not_a_report"
    )
