"""streamer.testing: capture reports in users' tests, with real validation (no network)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from streamer import (
    BackgroundPublisher,
    ConfigError,
    InvalidReport,
    Publisher,
    Report,
    TaskError,
)
from streamer.testing import Captured, CapturingPublisher, capture

pytest_plugins = ["pytester", "streamer.testing"]  # the fixture is opt-in, as for users

URL = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens there: any connection would fail


@pytest.fixture
def publisher() -> Publisher:
    """A Publisher that is never started: its real publish() raises RuntimeError."""
    return Publisher(URL, exchange="test")


@pytest.fixture
def background() -> Iterator[BackgroundPublisher]:
    pub = BackgroundPublisher(URL, exchange="test")
    yield pub
    assert not pub._started, "a BackgroundPublisher under capture() must stay idle"
    pub.close()


def report(task_id: str = "t1", state: str = "running", **fields: object) -> Report:
    return Report(task_id=task_id, state=state, **fields)  # type: ignore[arg-type]


# -- capture() ------------------------------------------------------------------------------------


def test_never_started_publisher_records(publisher: Publisher) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        publisher.publish(report())
    with capture() as captured:
        publisher.publish(report("a", "waiting"))
        publisher.publish(report("a", "running", progress_report={"x": (1, 2)}))
        publisher.publish(report("b", "running"))
        publisher.publish(report("a", "finished", seq=99, sent_at=1.0))
    assert [(r.task_id, r.seq) for r in captured.reports] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("a", 3),
    ]
    assert all(r.sent_at > 1.0 for r in captured.reports)  # stamped, whatever the caller set
    assert captured.reports[1].progress_report == {"x": [1, 2]}  # as a consumer decodes it
    assert captured.task_ids == ["a", "b"]
    assert len(captured) == 4 and list(captured) == captured.reports
    assert repr(captured) == "<Captured 4 reports of 2 tasks>"
    with pytest.raises(RuntimeError, match="not started"):
        publisher.publish(report())  # the original is back


def test_background_publisher_starts_no_thread(background: BackgroundPublisher) -> None:
    threads = threading.active_count()
    with capture() as captured:
        background.publish(report("a", "running"))
        with background.task("a", task_type="sync") as task:
            task.progress(1, 2, step="content")
    assert threading.active_count() == threads
    assert not background._started
    captured.assert_states("a", ["running", "running", "running", "finished"])
    assert [r.seq for r in captured.for_task("a")] == [1, 2, 3, 4]
    assert captured.last("a").task_type == "sync"
    assert captured.last("a").worker_name.startswith("streamer@")  # type: ignore[union-attr]


def test_publishes_from_many_threads(background: BackgroundPublisher) -> None:
    threads, each = 8, 200
    barrier = threading.Barrier(threads)

    def work(n: int) -> None:
        barrier.wait()
        for _ in range(each):
            background.publish(report(f"own{n}"))
            background.publish(report("shared"))

    with capture() as captured:
        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert len(captured) == 2 * threads * each
    assert [r.seq for r in captured.for_task("shared")] == list(range(1, threads * each + 1))
    for n in range(threads):
        assert [r.seq for r in captured.for_task(f"own{n}")] == list(range(1, each + 1))


@pytest.mark.parametrize("cls", [Publisher, BackgroundPublisher])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (report("a.b"), "contains '.'"),
        (report(""), "must not be empty"),
        (report("a", "done"), "unknown state 'done'"),
        (report("a", result={1, object()}), "not serialisable"),
        (report("a", result="x" * 600), r"bytes encoded; the limit \(max_body\) is 500"),
        ({"task_id": "a", "state": "running"}, "takes a streamer.Report, got dict"),
    ],
)
def test_validation_still_raises(
    cls: type[Publisher | BackgroundPublisher], bad: object, message: str
) -> None:
    pub = cls(URL, max_body=500)
    with capture() as captured:
        with pytest.raises(InvalidReport, match=message):
            pub.publish(bad)  # type: ignore[arg-type]
        pub.publish(report("a"))
    assert [(r.task_id, r.seq) for r in captured.reports] == [("a", 1)]  # no seq used up
    if isinstance(pub, BackgroundPublisher):
        assert not pub._started
        pub.close()


def test_originals_restored_after_an_exception() -> None:
    originals = [Publisher.__dict__["publish"], BackgroundPublisher.__dict__["publish"]]
    with pytest.raises(ZeroDivisionError), capture():
        assert Publisher.__dict__["publish"] is not originals[0]
        1 / 0  # noqa: B018
    assert [Publisher.__dict__["publish"], BackgroundPublisher.__dict__["publish"]] == originals


def test_nested_captures(publisher: Publisher, background: BackgroundPublisher) -> None:
    with capture() as outer:
        outer_patch = Publisher.__dict__["publish"]
        publisher.publish(report("a"))
        with capture() as inner:
            publisher.publish(report("a"))
            background.publish(report("b"))
        assert Publisher.__dict__["publish"] is outer_patch
        background.publish(report("a", "finished"))
    assert [(r.task_id, r.seq) for r in outer.reports] == [("a", 1), ("a", 2)]
    assert [(r.task_id, r.seq) for r in inner.reports] == [("a", 1), ("b", 1)]
    with pytest.raises(RuntimeError, match="not started"):
        publisher.publish(report())


def test_task_reporter_error_is_captured(publisher: Publisher) -> None:
    with (
        capture() as captured,
        pytest.raises(ValueError, match="boom"),
        publisher.task("t", task_type="sync") as task,
    ):
        task.progress(1, 2, step="content")
        raise ValueError("boom")
    captured.assert_states("t", ["running", "running", "error"])
    captured.assert_final("t", "error")
    error = captured.last("t").error
    assert isinstance(error, TaskError) and error.code == "ValueError"
    assert error.description == "boom" and "Traceback" in error.data["traceback"]


# -- assertion helpers ----------------------------------------------------------------------------


@pytest.fixture
def sync() -> Captured:
    """A capture of one finished task with progress and one failed task."""
    pub = CapturingPublisher()
    with pub.task("sync1") as task:
        for n in range(1, 5):
            task.progress(n, 4, step="content")
    with pytest.raises(OSError), pub.task("pub1") as task:
        raise OSError("disk full")
    return pub.captured


def test_reading_helpers(sync: Captured) -> None:
    assert sync.task_ids == ["sync1", "pub1"]
    assert sync.states("sync1") == ["running"] * 5 + ["finished"]
    assert [r.seq for r in sync.for_task("sync1")] == [1, 2, 3, 4, 5, 6]
    assert sync.for_task("nope") == [] and sync.states("nope") == []
    assert sync.last("pub1").state == "error"


def test_last_names_the_captured_tasks(sync: Captured) -> None:
    with pytest.raises(
        AssertionError,
        match="no report of task 'nope' was captured; tasks captured: 'sync1', 'pub1'",
    ):
        sync.last("nope")
    with pytest.raises(AssertionError, match="nothing was published at all"):
        Captured().last("nope")


def test_assert_states(sync: Captured) -> None:
    sync.assert_states("sync1", ["running"] * 5 + ["finished"])
    sync.assert_states("pub1", iter(["running", "error"]))
    with pytest.raises(AssertionError) as info:
        sync.assert_states("sync1", ["waiting", "running", "finished"])
    message = str(info.value)
    assert message.startswith("states of task 'sync1' differ (- expected, + captured):")
    assert "\n-waiting\n" in message and "\n+running\n" in message
    assert message.endswith("expected: waiting, running, finished\ncaptured: running ×5, finished")
    with pytest.raises(AssertionError, match=r"no report of task 'x' .* expected states: running"):
        sync.assert_states("x", ["running"])


def test_assert_final(sync: Captured) -> None:
    sync.assert_final("sync1", "finished")
    sync.assert_final("pub1", "error")
    with pytest.raises(AssertionError) as info:
        sync.assert_final("pub1", "finished")
    assert str(info.value) == (
        "task 'pub1' ended in state 'error' (seq 2), expected 'finished'; its states: "
        "running, error\nerror: OSError: disk full"
    )
    with pytest.raises(
        AssertionError, match="'finshed' is not a state; states are accepted, canceled"
    ):
        sync.assert_final("sync1", "finshed")
    with pytest.raises(AssertionError, match="no report of task 'x'"):
        sync.assert_final("x", "finished")


def test_assert_progress(sync: Captured) -> None:
    sync.assert_progress("sync1")
    sync.assert_progress("pub1")  # no progress at all: nothing went backwards
    pub = CapturingPublisher()
    task = pub.task("t")
    task.progress(3, 4, step="content")
    task.progress(1, 1, step="metadata")  # other steps do not interfere
    task.progress(step="content", note="no counts here")  # keeps 3/4
    task.progress(0, 0, step="publish")  # nothing to do: no ratio
    task.progress(4, 8, step="content")  # the total grew: the bar went back
    with pytest.raises(AssertionError) as info:
        pub.captured.assert_progress("t")
    assert str(info.value) == (
        "progress of task 't' went backwards in step 'content': 4/8 (50%) in the report with "
        "seq 5, after 3/4 (75%) in seq 4"
    )
    with pytest.raises(AssertionError, match="no report of task 'x'"):
        sync.assert_progress("x")


def test_clear_keeps_counting_seq(sync: Captured) -> None:
    sync.clear()
    assert sync.reports == [] and sync.task_ids == []
    pub = CapturingPublisher()
    pub.publish(report("a"))
    pub.captured.clear()
    pub.publish(report("a"))
    assert [r.seq for r in pub.captured.reports] == [2]


# -- CapturingPublisher ---------------------------------------------------------------------------


def test_capturing_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_EXCHANGE", "from-env")  # ignored: tests stay hermetic
    threads = threading.active_count()
    with CapturingPublisher(exchange="pulp", app_id="worker") as pub:
        assert pub.settings.exchange == "pulp"
        pub.publish(report("a"))
        with pub.task("b") as task:
            task.progress(1, 2)
        assert pub.flush() is True and pub.flush(timeout=0.1) is True
        stats = pub.stats
        assert (stats.published, stats.confirmed, stats.pending, stats.dropped) == (4, 4, 0, 0)
        assert stats.balanced
        assert repr(pub) == "<CapturingPublisher capturing, 4 reports captured>"
    assert pub.closed and threading.active_count() == threads
    assert pub.captured.last("b").worker_name.startswith("worker@")  # type: ignore[union-attr]
    pub.captured.assert_final("b", "finished")

    pub.publish(report("a"))  # after close: dropped and counted, like the real one
    with pytest.raises(InvalidReport):
        pub.publish(report("a", "nope"))  # still validated
    stats = pub.stats
    assert (stats.published, stats.confirmed, stats.dropped) == (5, 4, 1)
    assert stats.dropped_by_reason["closed"] == 1 and stats.balanced
    assert len(pub.captured) == 4
    pub.close()  # idempotent


def test_capturing_publisher_options() -> None:
    with pytest.raises(ConfigError, match="unknown setting nope"):
        CapturingPublisher(nope=1)
    with pytest.raises(ConfigError, match="max_body must be at least 1"):
        CapturingPublisher(max_body=0)
    small = CapturingPublisher(["amqp://a:b@h1/", "amqp://a:b@h2/"], max_body=300)
    assert small.settings.urls == ("amqp://a:b@h1/", "amqp://a:b@h2/")
    with pytest.raises(InvalidReport, match="max_body"):
        small.publish(report(result="x" * 400))
    with pytest.raises(TypeError, match="either settings"):
        CapturingPublisher(settings=small.settings, exchange="x")
    assert CapturingPublisher(settings=small.settings).settings is small.settings


def test_capturing_publisher_is_not_patched_by_capture() -> None:
    pub = CapturingPublisher()
    with capture() as captured:
        pub.publish(report())
    assert len(pub.captured) == 1 and len(captured) == 0


# -- the pytest fixture ---------------------------------------------------------------------------


def test_fixture_requested_here(streamer_capture: Captured, publisher: Publisher) -> None:
    publisher.publish(report("a", "finished"))
    streamer_capture.assert_final("a", "finished")


def test_fixture_in_a_users_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # only what the conftest asks for
    pytester.makeconftest('pytest_plugins = ["streamer.testing"]')
    pytester.makepyfile(
        """
        from streamer import BackgroundPublisher, Report

        def test_sync(streamer_capture):
            pub = BackgroundPublisher("amqp://guest:guest@127.0.0.1:1/")
            with pub.task("sync-1") as task:
                task.progress(1, 1)
            streamer_capture.assert_states("sync-1", ["running", "running", "finished"])
            assert not pub._started

        def test_bad_state_fails(streamer_capture):
            streamer_capture.assert_final("sync-1", "finished")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*no report of task 'sync-1' was captured: nothing was*"])


def test_importable_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import streamer.testing as t\n"
        "assert not hasattr(t, 'streamer_capture')\n"
        "with t.capture() as c: pass\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
