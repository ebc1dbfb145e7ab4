"""The history's pure parts: durations, sizes and --since forms, the replay's progress and
which reports a view keeps, and topic matching on our side of a stream."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamer import Report
from streamer.errors import ConfigError
from streamer.history import SINCE_MARGIN, Replay, Window, parse_duration, parse_since, parse_size
from streamer.routing import TopicFilter

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600),
     ("2", 2), ("0.5h", 1800), (" 1H ", 3600)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "0", "0s", "-5m", "h", "1h junk", "10 minutes"])
def test_bad_durations_name_the_text(text: str) -> None:
    with pytest.raises(ConfigError, match="max-age"):
        parse_duration(text, "--max-age")


@pytest.mark.parametrize(
    ("text", "size"),
    [("1GB", 10**9), ("500MB", 5 * 10**8), ("2GiB", 2 * 2**30), ("1.5 gb", 15 * 10**8),
     (10**7, 10**7), ("3000000", 3 * 10**6)],
)  # fmt: skip
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "1XB", "10kB", "", 100])
def test_bad_or_tiny_sizes_are_refused(text: str | int) -> None:
    with pytest.raises(ConfigError, match="max-bytes"):
        parse_size(text, "--max-bytes")


def test_since_forms() -> None:
    first = parse_since("first", NOW)
    assert first.offset == "first" and first.cut is None
    back = parse_since("10m", NOW)
    assert back.cut == NOW - 600
    # The broker is asked a little earlier (its clock, chunk granularity); the cut is exact.
    assert back.offset == datetime.fromtimestamp(NOW - 600 - SINCE_MARGIN, tz=UTC)
    zoned = parse_since("2027-01-15T08:00:00+01:00", NOW)
    assert zoned.cut == datetime(2027, 1, 15, 7, tzinfo=UTC).timestamp()
    naive = parse_since("2027-01-15T08:00:00", NOW)  # local time
    assert naive.cut == datetime(2027, 1, 15, 8).timestamp()
    with pytest.raises(ConfigError, match="expected 'first', a duration"):
        parse_since("yesterday", NOW)


def report(sent_at: float, task_id: str = "t") -> Report:
    return Report(task_id=task_id, state="running", seq=1, sent_at=sent_at)


def test_a_view_keeps_reports_sent_since_the_cut_on_its_keys() -> None:
    since = parse_since("10m", NOW)
    replay = Replay(since, Window(0, 99, NOW - 900, NOW - 1, 100.0), ["tasks.a", "x.*"], NOW)
    assert not replay.keeps("tasks.a", report(NOW - 601))
    assert replay.keeps("tasks.a", report(NOW - 600))
    assert replay.keeps("tasks.a", report(0.0))  # a foreign report without a time
    assert not replay.keeps("tasks.b", report(NOW - 5))
    assert replay.keeps("x.y", report(NOW - 5))


def test_replay_progress_runs_from_the_first_offset_read_to_the_newest_at_start() -> None:
    replay = Replay(parse_since("first"), Window(100, 300, 1.0, 2.0, 10.0), ["tasks.#"], NOW)
    assert replay.progress(-1) == 0.0  # nothing read yet
    assert replay.progress(100) == 0.0
    assert replay.progress(150) == 0.25
    assert replay.progress(299) == pytest.approx(0.995)
    assert replay.progress(300) is None and replay.caught_up
    assert replay.progress(200) is None  # caught up for good


def test_nothing_to_replay_is_live_at_once() -> None:
    empty = Replay(parse_since("first"), Window(-1, -1, None, None, 0.0), ["tasks.#"], NOW)
    assert empty.caught_up and empty.progress(-1) is None
    # The newest report is older than the cut: the broker sends nothing before new ones.
    stale = Window(0, 99, NOW - 900, NOW - 700, 100.0)
    later = Replay(parse_since("10m", NOW), stale, ["tasks.#"], NOW)
    assert later.caught_up


@pytest.mark.parametrize(
    ("patterns", "key", "matches"),
    [
        (["tasks.#"], "tasks.a", True),
        (["tasks.#"], "tasks", True),  # '#' is zero words too
        (["tasks.#"], "tasks.a.b", True),
        (["tasks.#"], "other.a", False),
        (["tasks.*"], "tasks.a", True),
        (["tasks.*"], "tasks.a.b", False),
        (["tasks.*"], "tasks", False),
        (["#"], "anything.at.all", True),
        (["#.b"], "a.b", True),
        (["#.b"], "b", True),
        (["a.#.b"], "a.b", True),
        (["a.#.b"], "a.x.y.b", True),
        (["a.#.b"], "a.x.y.c", False),
        (["*.a"], "x.a", True),
        (["tasks.a"], "tasks.ab", False),
        (["tasks.a", "tasks.b"], "tasks.b", True),
        (["a.*.#"], "a.b", True),
        (["a.*.#"], "a", False),
    ],
)
def test_topic_matching_as_the_broker_does(patterns: list[str], key: str, matches: bool) -> None:
    topic = TopicFilter(patterns)
    assert topic(key) is matches
    assert topic(key) is matches  # remembered
    assert topic.everything is (patterns == ["#"])


def test_history_is_folded_when_it_was_sent_and_live_reports_now() -> None:
    replay = Replay(parse_since("10m", NOW), Window(0, 9, NOW - 900, NOW, 1.0), ["tasks.a"], NOW)
    assert replay.when("tasks.a", report(NOW - 60), NOW + 5) == NOW - 60  # history
    assert replay.when("tasks.a", report(NOW + 1), NOW + 5) == NOW + 5  # live
    assert replay.when("tasks.a", report(0.0), NOW + 5) == NOW + 5  # no send time
    assert replay.when("tasks.a", report(NOW - 700), NOW + 5) is None  # before --since
    assert replay.when("tasks.b", report(NOW - 60), NOW + 5) is None  # not its key
