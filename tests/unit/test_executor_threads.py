"""The executor threads' inbox (worker/threads.py): threads woken and started only as needed,
and never a job waiting behind a running one while a slot is free. No database."""

from __future__ import annotations

import threading

from helpers import wait_until
from loop_harness import gates, open_gate

from pgdyno.clock import SYSTEM_CLOCK, Wakeup
from pgdyno.queue import ClaimedJob
from pgdyno.worker.threads import ExecutorPool


def _pool(size: int) -> ExecutorPool:
    pool = ExecutorPool(size, Wakeup(SYSTEM_CLOCK), bind=lambda: None)
    pool.start()
    return pool


def _gate_job(job_id: int, key: str) -> ClaimedJob:
    return ClaimedJob(job_id, "q", "unit.gate", {"key": key}, 1, 5)


def _gate(key: str) -> threading.Event:
    return gates.setdefault(key, threading.Event())


def _submit(pool: ExecutorPool, jobs: list[ClaimedJob]) -> None:
    for job in jobs:  # one at a time, as the old pool took them
        pool.submit(job)


def _done(pool: ExecutorPool) -> set[int]:
    return {outcome.job.id for outcome in list(pool.outcomes)}


def test_threads_start_as_jobs_need_them_not_all_at_start():
    pool = _pool(8)
    try:
        assert pool._threads == []  # the old pool started its 8 threads here
        _submit(pool, [_gate_job(1, "threads-a"), _gate_job(2, "threads-b")])
        wait_until(lambda: pool.queued() == 0, timeout=5, message="both jobs started")
        assert len(pool._threads) == 2  # one per blocked job, not one per slot
    finally:
        open_gate("threads-a")
        open_gate("threads-b")
        wait_until(lambda: _done(pool) == {1, 2}, timeout=5, message="both outcomes")
        pool.stop()


def test_a_job_never_waits_behind_a_running_one_while_a_slot_is_free():
    # Three jobs submitted at once, the first two block: the third runs and finishes while
    # they still run (each thread that takes a job leaves another awake for the rest).
    pool = _pool(3)
    third = ClaimedJob(3, "q", "unit.ok", {"value": 7}, 1, 5)
    try:
        _submit(pool, [_gate_job(1, "behind-a"), _gate_job(2, "behind-b"), third])
        wait_until(lambda: 3 in _done(pool), timeout=5, message="the third job's outcome")
        assert _done(pool) == {3}
        assert not _gate("behind-a").is_set() and not _gate("behind-b").is_set()  # still running
    finally:
        open_gate("behind-a")
        open_gate("behind-b")
        wait_until(lambda: _done(pool) == {1, 2, 3}, timeout=5, message="every outcome")
        pool.stop()


def test_a_batch_of_short_jobs_is_run_by_the_threads_awake():
    # 200 jobs that return at once, at --concurrency 200: every job runs, and far fewer than
    # 200 threads are started (the old pool woke one thread per job, all 200 started).
    pool = _pool(200)
    jobs = [ClaimedJob(job_id, "q", "unit.ok", {}, 1, 5) for job_id in range(1, 201)]
    try:
        _submit(pool, jobs)
        wait_until(lambda: len(pool.outcomes) == 200, timeout=10, message="every outcome")
        assert all(outcome.error is None for outcome in pool.outcomes)
        assert len(pool._threads) < 200
    finally:
        pool.stop()


def test_jobs_beyond_the_threads_wait_for_the_first_thread_free():
    pool = _pool(1)
    try:
        _submit(pool, [_gate_job(1, "single-a"), ClaimedJob(2, "q", "unit.ok", {}, 1, 5)])
        wait_until(lambda: pool.queued() == 1, timeout=5, message="the first job started")
        assert len(pool._threads) == 1 and not pool.outcomes
        open_gate("single-a")
        wait_until(lambda: _done(pool) == {1, 2}, timeout=5, message="both outcomes")
    finally:
        open_gate("single-a")
        pool.stop()


def test_withdrawn_jobs_are_not_run_and_a_stopped_pool_ends_its_threads():
    pool = _pool(1)
    try:
        _submit(pool, [_gate_job(1, "withdraw-a"), ClaimedJob(2, "q", "unit.ok", {}, 1, 5)])
        wait_until(lambda: pool.queued() == 1, timeout=5, message="the first job started")
        assert pool.withdraw_queued() == [2]
        open_gate("withdraw-a")
        wait_until(lambda: _done(pool) == {1}, timeout=5, message="the first outcome")
    finally:
        open_gate("withdraw-a")
        pool.stop()
    wait_until(
        lambda: not any(thread.is_alive() for thread in pool._threads),
        timeout=5,
        message="the threads' exit",
    )
    assert _done(pool) == {1}
