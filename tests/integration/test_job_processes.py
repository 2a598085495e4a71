"""The process pool's watch over a job process (worker/pool.py), run in this test's process:
its timeout counts from its task's start, a process that never starts its task is stopped, and
a task publishing progress without pause is still stopped by its timeout and memory limit.

A job process starts late here because its job's args take seconds to unpickle in it
(SlowToUnpickle), before its task can start: the same wait as a cold fork server's, but exact.
"""

from __future__ import annotations

import multiprocessing.forkserver
import os
import time
from collections.abc import Iterator

import pytest
from helpers import REPO_DIR, TESTS_DIR

from pgdyno import tasks
from pgdyno.queue import ClaimedJob
from pgdyno.worker import pool


class SlowToUnpickle:
    """Unpickled (in the job process, before its task starts) as time.sleep(seconds): None."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __reduce__(self) -> tuple[object, tuple[float]]:
        return (time.sleep, (self.seconds,))


@pytest.fixture(scope="module")
def children() -> Iterator[pool.ChildProcesses]:
    """A process pool (its fork server shared by this module's tests)."""
    tasks.import_modules(["timeout_tasks"])
    with pytest.MonkeyPatch.context() as patch:
        # The fork server preloads it: tests/ must be on its path (it does not inherit sys.path).
        patch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), str(REPO_DIR)]))
        made = pool.ChildProcesses(
            worker="w",
            database_url="postgresql://unused",
            memory_limit=None,
            progress=lambda *_: None,
        )
        made.start()
    yield made
    made.stop_all()
    # The fork server lives as long as this process: stop it, so that none of another test
    # serves jobs with this module's preloaded modules.
    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]


def _job(task: str, **args: object) -> ClaimedJob:
    return ClaimedJob(1, "q", task, args, 1, 1)


def test_timeout_counts_from_the_task_start_not_the_process_start(children):
    outcome = children.run(_job("timeout.hello", late=SlowToUnpickle(2.0)), 1.0)
    assert (outcome.result, outcome.error) == ('"hello"', None)
    assert outcome.duration_s < 1.0  # the task's own time


def test_a_process_that_does_not_start_its_task_is_stopped(children, monkeypatch):
    monkeypatch.setattr(pool, "START_LIMIT_S", 1.0)
    started = time.monotonic()
    outcome = children.run(_job("timeout.hello", late=SlowToUnpickle(60.0)), None)
    assert time.monotonic() - started < 30  # not the 60 s it would take to start
    assert outcome.error == (
        "JobCrashed: the process for task 'timeout.hello' (attempt 1) did not start the task "
        "within 1 s of being forked; it was stopped"
    )
    assert outcome.retryable


def test_a_task_flooding_progress_is_stopped_by_its_timeout_and_memory_limit(children):
    timed_out = children.run(_job("timeout.flood", seconds=60), 1.0)
    assert timed_out.error is not None
    assert timed_out.error.startswith("JobTimeout: task 'timeout.flood' ran longer than its")
    children.memory_limit = 100 << 20
    started = time.monotonic()
    try:
        too_big = children.run(_job("timeout.flood", seconds=60, mib=150), None)
    finally:
        children.memory_limit = None
    assert time.monotonic() - started < 45  # stopped, not run to its end
    assert too_big.error is not None
    assert too_big.error.startswith("JobMemoryExceeded: task 'timeout.flood' used ")
