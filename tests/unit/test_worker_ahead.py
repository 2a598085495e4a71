"""Claiming ahead (worker/ahead.py): short jobs are claimed in batches beyond the free slots;
a heavy job neither waits behind them nor holds them. The loop's tests run on fakes, turn by
turn (tests/unit/conftest.py)."""

from __future__ import annotations

import pytest
from helpers import wait_until
from loop_harness import open_gate

from pgdyno.worker.ahead import BUDGET_S, HOLD_S, MAX_AHEAD, SHORT_S, WINDOW, ClaimAhead


def history(ahead: ClaimAhead, jobs: int, *, duration: float, every: float, start: float = 0):
    for n in range(jobs):
        ahead.finished(duration, start + n * every)


def test_claims_ahead_only_after_a_window_of_short_jobs_what_it_runs_in_the_budget():
    ahead = ClaimAhead(threads=2)
    assert ahead.extra == 0  # no history: one job per slot
    history(ahead, WINDOW - 1, duration=0.001, every=0.001)
    assert ahead.extra == 0
    ahead.finished(0.001, WINDOW * 0.001)
    assert ahead.extra == pytest.approx(BUDGET_S / 0.001, abs=1)  # 1,000 jobs/s for 20 ms
    ahead.finished(SHORT_S, 1.0)  # one job that is not short: one per slot again
    assert ahead.extra == 0
    history(ahead, WINDOW, duration=0.0, every=0.0001, start=2.0)
    assert ahead.extra == MAX_AHEAD  # 10,000 jobs/s: at most MAX_AHEAD
    history(ahead, WINDOW, duration=0.0001, every=0.01, start=3.0)
    assert ahead.extra == 2  # short jobs, but few of them: 100 a second
    ahead.handed_back()
    assert ahead.extra == 0


def test_reports_in_batches_while_jobs_claimed_ahead_wait():
    ahead = ClaimAhead(threads=1)
    history(ahead, WINDOW, duration=0.0001, every=0.0001)
    assert not ahead.flush_now(done=10, queued=90)
    assert ahead.flush_now(done=100, queued=90)
    assert ahead.flush_now(done=1, queued=1)  # the thread is about to run dry


def prime(worker, jobs: int = 3) -> None:
    """Run a few short jobs through the worker (concurrency 1), then give it the recent
    history of a fast one (the fake clock does not advance while real jobs run)."""
    worker.turn()  # connected, idle
    for _ in range(jobs):
        worker.jobs.insert("unit.ok")
        worker.db.session.notify("q")
        worker.turn()
        worker.finished()
        worker.turn()
    history(worker.worker._ahead, WINDOW, duration=0.0001, every=0.0002, start=worker.clock.now())


def test_a_worker_of_short_jobs_claims_ahead_at_concurrency_1(loop):
    worker = loop()
    prime(worker)
    # The jobs are short whatever the machine's load: a no-op job that took 5 ms of real time
    # on a loaded machine (a thread not scheduled) would count as heavy and stop the claiming
    # ahead this test is about (it failed so under CPU contention).
    ahead = worker.worker._ahead
    record = ahead.finished
    ahead.finished = lambda duration_s, at: record(min(duration_s, SHORT_S / 10), at)
    # And a turn that finds no outcome yet waits (real time) for the thread's next one instead
    # of letting the fake clock jump to HOLD_S, which would hand the jobs back: this test is
    # about reporting in batches, not about holding (tested below).
    loop_worker = worker.worker
    worker.clock.on_wait = lambda timeout: wait_until(
        lambda: bool(loop_worker._outcomes) or not loop_worker._running,
        timeout=5,
        message="the thread's next outcome",
    )
    limits = [c["limit"] for c in worker.jobs.called("complete_and_claim")]
    assert set(limits) == {1}  # while it knew too few of its jobs
    for _ in range(50):
        worker.jobs.insert("unit.ok")
    worker.db.session.notify("q")
    worker.turn()
    assert worker.jobs.called("complete_and_claim")[-1]["limit"] == 1 + MAX_AHEAD
    running = [job for job in worker.jobs.jobs.values() if job.status == "running"]
    assert len(running) == 50  # all claimed in one statement
    while any(job.status != "done" for job in worker.jobs.jobs.values()):
        worker.finished(1)
        worker.turn()
    # Reported in a few statements, not one per job.
    assert len(worker.jobs.called("complete_and_claim")) - len(limits) < 10


def test_jobs_claimed_ahead_of_a_heavy_job_go_back_unstarted_and_uncounted(loop):
    """A job that turns out heavy: the jobs claimed behind it wait HOLD_S at most, then go
    back to the queue (attempt not counted), and the worker claims one job at a time again."""
    worker = loop()
    prime(worker)
    heavy = worker.jobs.insert("unit.gate", {"key": "heavy"})
    behind = [worker.jobs.insert("unit.ok") for _ in range(5)]
    worker.db.session.notify("q")
    claimed_at = worker.clock.now()
    worker.turn()  # claims all six: the heavy one runs, five wait for the thread
    assert all(worker.jobs.jobs[job].status == "running" for job in [heavy, *behind])
    # The thread is started for the first job (worker/threads.py): the fake clock must not
    # pass HOLD_S before it took the heavy job (real time, briefly).
    wait_until(lambda: worker.worker._pool.queued() == 5, timeout=5, message="the heavy start")
    release, released_at = worker.jobs.release, []

    def timed_release(*args, **kwargs):
        released_at.append(worker.clock.now())
        return release(*args, **kwargs)

    worker.jobs.release = timed_release
    while not released_at:
        worker.turn()
    assert released_at[0] - claimed_at == pytest.approx(HOLD_S)
    released = worker.jobs.called("release")
    assert released == [{"ids": None, "keep": [heavy]}]  # not counted as a hand-back
    assert [worker.jobs.jobs[job].status for job in behind] == ["ready"] * 5
    assert [worker.jobs.jobs[job].attempts for job in behind] == [0] * 5
    open_gate("heavy")
    worker.finished()
    worker.turn()
    assert worker.jobs.called("complete_and_claim")[-1]["limit"] == 1
    while any(worker.jobs.jobs[job].status != "done" for job in behind):
        worker.finished()
        worker.turn()


def test_a_worker_holding_its_jobs_claimed_ahead_claims_no_more(loop):
    worker = loop()
    prime(worker)
    worker.jobs.insert("unit.gate", {"key": "hold"})
    for _ in range(3 * MAX_AHEAD):
        worker.jobs.insert("unit.ok")
    worker.db.session.notify("q")
    for _ in range(2):  # the claim, then a turn while the gate holds the thread
        worker.turn()
        running = [job for job in worker.jobs.jobs.values() if job.status == "running"]
        assert len(running) == 1 + MAX_AHEAD
    open_gate("hold")
