"""The worker's registration as a sleeper (worker/waiting.py), turn by turn on fakes.

The enqueue trigger notifies a queue only while a worker is registered as waiting on it
(migration 0011): these tests check when the loop registers, that it looks at its queues again
right after registering, and that it drops the registration while it cannot take a job.
Settings of the `loop` fixture: poll every 60 s, lease 30 s.
"""

from __future__ import annotations

import pytest
from loop_harness import open_gate

from pgdyno.worker.waiting import KEEP_WHILE_FULL_S, RETRY_S, WAIT_S


def registrations(worker) -> list[str]:
    return [name for name, _ in worker.jobs.calls if name in ("wait_for_jobs", "stop_waiting")]


def test_a_job_committed_just_before_the_registration_is_claimed_without_a_notification(loop):
    """It sent no notification (nobody waited): the claim after the registration finds it,
    not the next poll a minute later."""
    worker = loop()
    register = worker.jobs.wait_for_jobs

    def committed_meanwhile(*args, **kwargs):
        worker.jobs.insert("unit.gate", {"key": "meanwhile"})
        return register(*args, **kwargs)

    worker.jobs.wait_for_jobs = committed_meanwhile
    worker.turn()
    assert [job.status for job in worker.jobs.jobs.values()] == ["running"]
    assert worker.clock.elapsed() == 0.0
    open_gate("meanwhile")


def test_an_idle_worker_registers_once_and_stays_registered(loop):
    worker = loop()
    worker.turns(4)
    assert registrations(worker) == ["wait_for_jobs"]
    assert worker.jobs.called("wait_for_jobs") == [{"queues": ["q"]}]


def test_a_full_worker_drops_its_registration_and_registers_again_when_idle(loop):
    worker = loop()  # concurrency 1
    worker.turn()
    worker.jobs.insert("unit.gate", {"key": "full"})
    worker.db.session.notify("q")
    worker.turn()  # claims the job: no free slot
    assert registrations(worker) == ["wait_for_jobs"]
    assert worker.clock.waits[-1] == pytest.approx(KEEP_WHILE_FULL_S)
    worker.turn()  # still full: enqueuers need not notify for it any more
    assert registrations(worker) == ["wait_for_jobs", "stop_waiting"]
    worker.turns(2)  # runs, heartbeats: no statement about waiting
    assert registrations(worker) == ["wait_for_jobs", "stop_waiting"]
    open_gate("full")
    worker.finished()
    worker.turn()
    assert registrations(worker) == ["wait_for_jobs", "stop_waiting", "wait_for_jobs"]


def test_a_short_job_costs_no_statement_about_waiting(loop):
    """Its slot is free again before KEEP_WHILE_FULL_S: the worker stays registered."""
    worker = loop()  # concurrency 1
    worker.turn()
    for _ in range(3):
        worker.jobs.insert("unit.ok")
        worker.db.session.notify("q")
        worker.turn()
        worker.finished()
        worker.turn()
    assert [job.status for job in worker.jobs.jobs.values()] == ["done"] * 3
    assert registrations(worker) == ["wait_for_jobs"]


def test_a_worker_with_free_slots_stays_registered_while_it_runs_jobs(loop):
    worker = loop(concurrency=3)
    worker.jobs.insert("unit.gate", {"key": "partly"})
    worker.turns(3)
    assert registrations(worker) == ["wait_for_jobs"]
    open_gate("partly")


def test_an_unsettled_registration_is_tried_again_soon(loop):
    """An enqueuer was still committing after WAIT_S: the loop claims, and registers again
    RETRY_S later (then a settled registration lets it sleep until the poll)."""
    worker = loop()
    worker.jobs.settled = False
    worker.turn()
    assert worker.clock.waits == [pytest.approx(WAIT_S + RETRY_S)]
    worker.turn()
    assert registrations(worker) == ["wait_for_jobs", "wait_for_jobs"]
    assert worker.clock.waits[-1] == pytest.approx(60.0 - (WAIT_S + RETRY_S))
    # Each registration was followed by a claim.
    names = [
        name for name, _ in worker.jobs.calls if name in ("complete_and_claim", "wait_for_jobs")
    ]
    assert names[1:] == ["wait_for_jobs", "complete_and_claim"] * 2


def test_a_stopping_worker_and_a_burst_worker_do_not_wait_for_jobs(loop):
    worker = loop(concurrency=2)
    worker.jobs.insert("unit.gate", {"key": "last"})
    worker.turn()
    worker.worker.stop()
    worker.turn()  # waits for its last job, claims nothing more
    assert registrations(worker) == ["wait_for_jobs", "stop_waiting"]
    open_gate("last")
    worker.finished()
    worker.until_exit()

    burst = loop(concurrency=2, burst=True)
    burst.jobs.insert("unit.gate", {"key": "burst"})
    burst.turn()
    open_gate("burst")
    burst.finished()
    burst.until_exit()
    assert registrations(burst) == []


def test_a_new_session_registers_anew(loop):
    worker = loop()
    worker.turn()
    worker.db.session.lost = True
    worker.turns(3)
    assert len(worker.db.sessions) == 2
    assert registrations(worker) == ["wait_for_jobs", "wait_for_jobs"]
