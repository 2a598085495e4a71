"""Embedding: a worker in the caller's process through the stable top-level names."""

from __future__ import annotations

import signal
import threading

import pytest
from helpers import wait_for_status

import pgdyno
from pgdyno.worker import loop


@pgdyno.task("embed.double")
def double(n: int) -> int:
    return 2 * n


def test_the_stable_names_are_importable_from_the_package():
    assert pgdyno.Worker is loop.Worker
    assert pgdyno.Settings is pgdyno.config.Settings
    for name in ("Worker", "Settings", "run_worker", "build_worker", "task", "enqueue"):
        assert name in pgdyno.__all__


def test_run_worker_in_burst_mode_runs_the_queued_jobs_and_returns_0(conn, database_url):
    ids = pgdyno.enqueue_many(
        conn, [{"task": "embed.double", "queue": "embedded", "args": {"n": n}} for n in (1, 2)]
    )
    settings = pgdyno.Settings(database_url=database_url, concurrency=2)
    before = signal.getsignal(signal.SIGTERM)
    assert pgdyno.run_worker(["embedded"], settings=settings, burst=True) == 0
    results = [wait_for_status(conn, job_id, "done")["result"] for job_id in ids]
    assert results == [2, 4]
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_worker_built_for_embedding_stops_from_another_thread(conn, database_url):
    worker = pgdyno.build_worker(
        ["embedded"],
        settings=pgdyno.Settings(database_url=database_url),
        imports=["sample_tasks"],
        scale_down=False,
    )
    exit_codes: list[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(worker.run()))
    thread.start()
    job_id = pgdyno.enqueue(conn, "embed.double", {"n": 21}, queue="embedded")
    assert wait_for_status(conn, job_id, "done")["result"] == 42
    worker.stop()
    thread.join(10)
    assert exit_codes == [0]


def test_run_worker_with_a_task_module_that_cannot_be_imported_says_so(database_url):
    settings = pgdyno.Settings(database_url=database_url)
    with pytest.raises(pgdyno.ConfigError, match="cannot import task module 'no_such_tasks'"):
        pgdyno.run_worker(["embedded"], settings=settings, imports=["no_such_tasks"])


def test_run_worker_without_a_database_url_says_how_to_set_one():
    with pytest.raises(pgdyno.ConfigError, match="DATABASE_URL is not set"):
        pgdyno.run_worker(["embedded"], settings=pgdyno.Settings())
