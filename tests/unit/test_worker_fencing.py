"""The worker loop keeps what it runs and never writes over an attempt it lost (issue 11).

On the fakes of the `loop` fixture (poll every 60 s, lease 30 s, grace 5 s): a failure waiting
to be written when the connection drops (scenario 3), renewing its own leases before rescuing
anyone's (scenario 8), refused writes logged and counted, outcomes of lost attempts dropped.
"""

from __future__ import annotations

import logging

import psycopg
from loop_harness import open_gate


def _names(calls, start=0):
    return [name for name, _ in calls[start:]]


def test_failure_waiting_to_be_written_when_the_connection_drops_is_kept(loop):
    worker = loop(concurrency=2)
    running = worker.jobs.insert("unit.gate", {"key": "keeps"})
    failing = worker.jobs.insert("unit.fails", max_attempts=1)
    worker.turn()
    worker.finished()
    worker.jobs.fail_next = psycopg.OperationalError("server closed the connection")
    worker.turn()  # writing the failure finds the connection gone
    worker.turn()  # reconnects
    assert worker.jobs.called("release") == [{"ids": None, "keep": sorted([running, failing])}]
    assert (worker.jobs.jobs[failing].status, worker.jobs.jobs[failing].attempts) == ("failed", 1)
    assert [call["job_id"] for call in worker.jobs.called("fail")] == [failing, failing]
    assert worker.jobs.jobs[running].status == "running"


def test_after_an_outage_longer_than_the_lease_it_takes_its_jobs_back_before_rescuing(loop):
    worker = loop()
    job_id = worker.jobs.insert("unit.gate", {"key": "outage"})
    worker.turn()
    job = worker.jobs.jobs[job_id]
    job.status, job.worker = "ready", None  # rescued by someone while we could not renew it
    worker.db.session.lost = True
    worker.turn()  # the connection is gone
    before = len(worker.jobs.calls)
    worker.turn()  # back: renew (take back) first, then hand back lost claims, then rescue
    names = _names(worker.jobs.calls, before)
    assert names.index("heartbeat") < names.index("release") < names.index("rescue_expired")
    assert (job.status, job.worker, job.attempts) == ("running", "winston.1:1:ab", 1)


def test_a_loop_stalled_past_the_lease_renews_its_leases_before_its_poll_rescues(loop):
    worker = loop()
    worker.jobs.insert("unit.gate", {"key": "stall"})
    worker.turn()
    worker.clock.advance(120)  # the loop did not run for two minutes (a GIL-bound task)
    before = len(worker.jobs.calls)
    worker.turn()
    names = _names(worker.jobs.calls, before)
    assert names.index("heartbeat") < names.index("rescue_expired")


def test_completion_of_an_attempt_the_worker_lost_is_refused_logged_and_counted(loop, caplog):
    worker = loop()
    job_id = worker.jobs.insert("unit.gate", {"key": "late"})
    worker.turn()
    job = worker.jobs.jobs[job_id]
    job.worker, job.attempts = "winston.2:7:cd", 2  # rescued and claimed by another worker
    open_gate("late")
    worker.finished()
    with caplog.at_level(logging.WARNING, "pgdyno"):
        worker.turn()
    refused = [r.logfmt for r in caplog.records if r.msg == "write_refused"]
    assert refused == [
        {
            "kind": "complete",
            "job": job_id,
            "attempt": None,
            "worker": "winston.1:1:ab",
            "refused_total": 1,
        }
    ]
    assert worker.worker.refused_writes == 1
    assert (job.status, job.worker, job.result) == ("running", "winston.2:7:cd", None)


def test_a_lost_lease_drops_the_job_and_its_late_outcome_and_progress(loop, caplog):
    worker = loop()
    job_id = worker.jobs.insert("unit.gate", {"key": "lost"})
    worker.turn()
    job = worker.jobs.jobs[job_id]
    job.status, job.worker, job.attempts = "running", "winston.2:7:cd", 2
    with caplog.at_level(logging.WARNING, "pgdyno"):
        worker.turn()  # the heartbeat finds the lease gone
    [lost] = [r.logfmt for r in caplog.records if r.msg == "lease_lost"]
    assert (lost["job"], lost["attempt"], lost["stopped"], lost["refused_total"]) == (
        job_id,
        1,
        False,  # a thread cannot be stopped; its outcome is dropped
        1,
    )
    worker.worker._set_progress(job_id, 1, '{"late": true}')
    open_gate("lost")
    worker.finished()
    worker.turn()
    assert worker.jobs.called("set_progress") == []
    assert all(call["done"] == [] for call in worker.jobs.called("complete_and_claim"))
    assert job.status == "running" and job.worker == "winston.2:7:cd"


def test_progress_is_written_for_the_attempt_that_reported_it(loop):
    worker = loop()
    job_id = worker.jobs.insert("unit.gate", {"key": "steps"})
    worker.turn()
    worker.worker._set_progress(job_id, 1, '{"step": 1}')
    worker.turn()
    assert worker.jobs.jobs[job_id].progress == {"step": 1}
    worker.worker._set_progress(job_id, 7, '{"step": 2}')  # an attempt this worker does not run
    worker.turn()
    assert len(worker.jobs.called("set_progress")) == 1
