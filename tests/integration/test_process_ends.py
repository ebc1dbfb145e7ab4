"""Nothing lost at process end, in every way task workers run.

Each job (tests/integration/jobs.py) publishes one task's 450 reports, the last one
``finished``, and returns without ``flush()`` or ``close()``; the worker process then ends the
way its framework ends it. A consumer bound before the first publish must then see, for every
task, every report: seq 1..450 with no gap and no repeat, ending ``finished``.

Ways covered: ``multiprocessing.Process`` children of every start method (fork and forkserver
end through ``os._exit``, spawn through interpreter exit); a publisher made in the parent and
first used in fork children; ``multiprocessing.Pool(maxtasksperchild=1)``;
``ProcessPoolExecutor(max_tasks_per_child=1)``; Celery prefork children recycled by
``worker_max_tasks_per_child=1``; RQ work horses (a real ``rq worker`` on a real Redis).

The processes are started from the test's own (main) thread, blocking its event loop for a
few seconds (the consumer's messages wait in its queue meanwhile): on Python 3.11 a child
forked from a worker thread exits with status 1 even when its target is ``pass``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamer import Report
from tests.integration import jobs
from tests.integration.conftest import Collector
from tests.integration.test_celery_example import celery_worker, example_env, tail

ROOT = Path(__file__).resolve().parents[2]
TASKS = 6
REDIS_URL = os.environ.get("STREAMER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def task_ids() -> list[str]:
    return [uuid.uuid4().hex for _ in range(TASKS)]


async def assert_every_report_arrived(
    collector: Collector, ids: list[str], others: frozenset[str] = frozenset()
) -> None:
    """Every task: seq 1..REPORTS exactly, in order, the last one ``finished`` (reports of
    the tasks in ``others`` are left out)."""
    expected = TASKS * jobs.REPORTS + len(others)
    with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
        await collector.wait_for(expected, timeout=30)
    await asyncio.sleep(0.3)  # anything beyond the expected count (a repeat) shows too
    by_task: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for _, body, _ in collector.messages:
        if body["task_id"] not in others:
            by_task[body["task_id"]].append((body["seq"], body["state"]))
    assert sorted(by_task) == sorted(ids), f"reports of {len(by_task)} of {len(ids)} tasks"
    for task_id in ids:
        got = by_task[task_id]
        seqs = [seq for seq, _ in got]
        assert seqs == list(range(1, jobs.REPORTS + 1)), (
            f"task {task_id}: {len(seqs)} reports, last seq {seqs[-1] if seqs else None}, "
            f"missing {sorted(set(range(1, jobs.REPORTS + 1)) - set(seqs))[:10]}..."
        )
        assert got[-1][1] == "finished", f"task {task_id} ended {got[-1][1]}"


def _children(method: str, url: str, exchange: str, ids: list[str]) -> list[int | None]:
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=jobs.publish_task, args=(url, exchange, i)) for i in ids]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    return [proc.exitcode for proc in procs]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
async def test_multiprocessing_children_returning_from_target(
    method: str, broker_url: str, exchange: str, collector: Collector
) -> None:
    ids = task_ids()
    codes = _children(method, broker_url, exchange, ids)
    assert codes == [0] * TASKS
    await assert_every_report_arrived(collector, ids)


@contextlib.contextmanager
def shared_publisher(url: str, exchange: str) -> Iterator[None]:
    """A publisher made (and used) in this process before it forks, as a Celery app does."""
    from streamer import BackgroundPublisher

    jobs.SHARED = BackgroundPublisher(url=url, exchange=exchange)
    try:
        yield
    finally:
        jobs.SHARED.close(5)
        jobs.SHARED = None


async def test_fork_children_of_a_parent_that_publishes(
    broker_url: str, exchange: str, collector: Collector, unique: str
) -> None:
    ids = task_ids()
    with shared_publisher(broker_url, exchange):
        parent = f"parent-{unique}"
        jobs.SHARED.publish(Report(task_id=parent, state="running"))  # type: ignore[union-attr]
        assert jobs.SHARED.flush(10)  # type: ignore[union-attr]
        codes = _children("fork", broker_url, exchange, ids)
    assert codes == [0] * TASKS
    await assert_every_report_arrived(collector, ids, others=frozenset([parent]))


def _pool(url: str, exchange: str, ids: list[str]) -> list[str]:
    with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=1) as pool:
        done = pool.starmap(jobs.publish_task, [(url, exchange, i) for i in ids])
        pool.close()
        pool.join()  # every worker retired after its one task
    return done


async def test_pool_workers_retired_by_maxtasksperchild(
    broker_url: str, exchange: str, collector: Collector
) -> None:
    ids = task_ids()
    assert _pool(broker_url, exchange, ids) == ids
    await assert_every_report_arrived(collector, ids)


def _executor(method: str, url: str, exchange: str, ids: list[str]) -> list[str]:
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx, max_tasks_per_child=1) as ex:
        return list(ex.map(jobs.publish_task, [url] * len(ids), [exchange] * len(ids), ids))


@pytest.mark.parametrize("method", ["spawn", "forkserver"])  # fork cannot recycle workers
async def test_process_pool_executor_max_tasks_per_child(
    method: str, broker_url: str, exchange: str, collector: Collector
) -> None:
    ids = task_ids()
    assert _executor(method, broker_url, exchange, ids) == ids
    await assert_every_report_arrived(collector, ids)


# -- Celery prefork -----------------------------------------------------------------------

CELERY_APP = """
import os
from celery import Celery
from tests.integration.jobs import publish_task

app = Celery("process_ends", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_max_tasks_per_child=1,  # every child is recycled after one task
    control_exchange={queue!r},
)
app.task(name="publish_task")(publish_task)
"""

CELERY_SEND = """
import json, sys
from process_ends_app import app
for task_id in json.loads(sys.argv[1]):
    app.send_task("publish_task", args=[{url!r}, {exchange!r}, task_id], queue={queue!r})
"""


async def test_celery_prefork_children_recycled_after_each_task(
    broker_url: str,
    exchange: str,
    collector: Collector,
    celery_queue: str,
    unique: str,
    tmp_path: Path,
) -> None:
    import json

    (tmp_path / "process_ends_app.py").write_text(CELERY_APP.format(queue=celery_queue))
    env = example_env(broker_url, exchange, tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env["PYTHONPATH"]])
    ids = task_ids()
    log = tmp_path / "worker.log"
    with celery_worker(
        "process_ends_app", celery_queue, f"streamer-ends-{unique}", env, log, cwd=tmp_path
    ) as worker:
        send = CELERY_SEND.format(url=broker_url, exchange=exchange, queue=celery_queue)
        sent = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", send, json.dumps(ids)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        await wait_for_finished(collector, ids, worker.poll, log)
    await assert_every_report_arrived(collector, ids)
    # Each task ran in its own child: every child was recycled (os._exit) after its task.
    assert len(pids_of(collector)) == TASKS, pids_of(collector)


def pids_of(collector: Collector) -> set[str]:
    return {body["worker_name"] for _, body, _ in collector.messages}


async def wait_for_finished(
    collector: Collector, ids: list[str], poll: Callable[[], int | None], log: Path
) -> None:
    """Until every task's ``finished`` report arrived (60 s), failing early if the worker
    died."""
    deadline = time.monotonic() + 60
    while True:
        ended = {
            body["task_id"] for _, body, _ in collector.messages if body["state"] == "finished"
        }
        if ended >= set(ids):
            return
        assert poll() is None, f"worker died:\n{tail(log)}"
        assert time.monotonic() < deadline, (
            f"{len(set(ids) - ended)} of {len(ids)} tasks never finished:\n{tail(log)}"
        )
        await asyncio.sleep(0.1)


# -- RQ -------------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (``$STREAMER_TEST_REDIS``); missing = a failure saying so."""
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisDown

    try:
        Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except RedisDown as exc:
        pytest.fail(
            f"no Redis at {REDIS_URL} ({exc}): the RQ test needs a real one "
            "(`make test` starts redis-server when none runs)",
            pytrace=False,
        )
    return REDIS_URL


async def test_rq_work_horses(
    broker_url: str,
    exchange: str,
    collector: Collector,
    redis_url: str,
    unique: str,
    tmp_path: Path,
) -> None:
    from redis import Redis
    from rq import Queue

    queue_name = f"streamer-test-{unique}"
    redis = Redis.from_url(redis_url)
    queue = Queue(queue_name, connection=redis)
    ids = task_ids()
    try:
        for task_id in ids:
            queue.enqueue(jobs.rq_job, task_id)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
        env.update(STREAMER_URL=broker_url, STREAMER_EXCHANGE=exchange, PYTHONPATH=str(ROOT))
        rq = shutil.which("rq", path=str(Path(sys.executable).parent)) or "rq"
        ran = await asyncio.to_thread(
            subprocess.run,
            [rq, "worker", "--burst", "--url", redis_url, "--name", queue_name, queue_name],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        failed = queue.failed_job_registry.get_job_ids()
        assert not failed, f"RQ jobs failed: {failed}\n{ran.stderr[-2000:]}"
        await assert_every_report_arrived(collector, ids)
        # Every job ran in its own work horse, a fork of the worker that ends with os._exit.
        assert len(pids_of(collector)) == TASKS, pids_of(collector)
    finally:
        queue.delete(delete_jobs=True)
        redis.close()


# -- os._exit in user code; the broker gone at the end ---------------------------------------

OS_EXIT_SCRIPT = """
import os, sys
sys.path.insert(0, {root!r})
from tests.integration import jobs
jobs.publish_task({url!r}, {exchange!r}, {task_id!r})
os._exit(3)  # no atexit, no flush: the wrapper flushes first
"""


async def test_os_exit_in_user_code(broker_url: str, exchange: str, collector: Collector) -> None:
    ids = task_ids()
    scripts = [
        OS_EXIT_SCRIPT.format(root=str(ROOT), url=broker_url, exchange=exchange, task_id=i)
        for i in ids
    ]
    done = await asyncio.gather(
        *(
            asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", s], capture_output=True, timeout=60
            )
            for s in scripts
        )
    )
    assert [d.returncode for d in done] == [3] * TASKS, [d.stderr for d in done]
    await assert_every_report_arrived(collector, ids)


def _unreachable_child(port: int) -> None:
    from streamer import BackgroundPublisher

    pub = BackgroundPublisher(
        f"amqp://guest:guest@127.0.0.1:{port}/", "x", connect_timeout=0.2, close_timeout=0.5
    )
    for n in range(100):
        pub.publish(Report(task_id="t", state="running", progress_report={"n": n}))


def _time_child(port: int) -> tuple[int | None, float]:
    proc = multiprocessing.get_context("fork").Process(target=_unreachable_child, args=(port,))
    t0 = time.monotonic()
    proc.start()
    proc.join(30)
    return proc.exitcode, time.monotonic() - t0


async def test_exit_with_the_broker_unreachable_waits_only_close_timeout(free_port: int) -> None:
    """The exit flush is bounded: with nothing listening, a child with close_timeout=0.5
    still ends promptly and cleanly (a hang would take the 30 s join)."""
    code, took = _time_child(free_port)
    assert code == 0
    assert took < 5, f"the child took {took:.1f} s to end"
