"""The worker loop's decisions and deadlines, turn by turn, on a fake clock and fake statements.

Settings of the `loop` fixture: poll every 60 s, lease 30 s (heartbeat every 10 s), grace 5 s.
Each turn ends in a wait whose timeout the fake clock records and then jumps over (unless
something is ready), so `clock.waits` is the loop's schedule.
"""

from __future__ import annotations

import logging

import psycopg
from helpers import wait_until
from loop_harness import open_gate

from pgdyno.worker.timers import Timers


def test_idle_worker_without_an_idle_callback_sleeps_until_the_next_poll(loop):
    worker = loop()
    worker.turns(3)
    # No busy loop: each idle turn waits for the poll, and each poll claims and rescues.
    assert worker.clock.waits == [60.0, 60.0, 60.0]
    assert len(worker.jobs.called("rescue_expired")) == 3
    # The first idle turn registers as waiting (worker/waiting.py) and claims once more.
    assert [c["limit"] for c in worker.jobs.called("complete_and_claim")] == [1, 1, 1, 1]
    assert [name for name, _ in worker.jobs.calls if "wait" in name] == ["wait_for_jobs"]


def test_job_is_claimed_run_and_reported_in_the_statement_of_the_next_claim(loop):
    worker = loop(concurrency=2)
    job_id = worker.jobs.insert("unit.ok", {"value": 42})
    worker.turn()
    worker.finished()
    worker.turn()
    claims = worker.jobs.called("complete_and_claim")
    assert claims[0] == {"worker": "winston.1:1:ab", "limit": 2, "done": []}
    # Reported in a claim (limit 2: both slots free again), whether or not the first turn
    # looked once more before sleeping (that depends on how soon the thread ran the job).
    reports = [claim for claim in claims if claim["done"]]
    assert reports == [{"worker": "winston.1:1:ab", "limit": 2, "done": [(job_id, "42")]}]
    assert worker.jobs.jobs[job_id].status == "done"


def test_heartbeat_renews_the_lease_every_third_of_it_while_a_job_runs(loop):
    worker = loop()
    job_id = worker.jobs.insert("unit.gate", {"key": "hb"})
    worker.turns(3)
    assert worker.clock.waits == [10.0, 10.0, 10.0]
    assert worker.jobs.called("heartbeat") == [
        {"ids": [job_id], "lease": 30.0},
        {"ids": [job_id], "lease": 30.0},
    ]
    open_gate("hb")
    worker.finished()
    worker.turns(2)
    assert len(worker.jobs.called("heartbeat")) == 2  # nothing runs: no more heartbeats
    assert worker.clock.waits[-2:] == [30.0, 60.0]  # to the next poll, then from poll to poll


def test_lost_lease_is_logged(loop, caplog):
    worker = loop()
    job_id = worker.jobs.insert("unit.gate", {"key": "lost"})
    worker.turn()
    worker.jobs.jobs[job_id].worker = "another worker"  # rescued and claimed elsewhere
    with caplog.at_level(logging.WARNING, "pgdyno"):
        worker.turn()
    assert [r.logfmt["job"] for r in caplog.records if r.msg == "lease_lost"] == [job_id]


def test_scheduled_job_is_claimed_when_it_is_due_not_at_the_next_poll(loop):
    worker = loop()
    job_id = worker.jobs.insert("unit.ok", delay=7.0)
    worker.turn()
    assert worker.clock.waits == [7.0]
    worker.turn()
    assert worker.jobs.jobs[job_id].claimed_at == worker.clock.start + 7.0


def test_notification_for_one_of_its_queues_claims_at_once_and_for_another_does_not(loop):
    worker = loop()
    worker.turn()  # the first claim finds nothing
    worker.db.session.notify("elsewhere")
    worker.turn()
    claims = len(worker.jobs.called("complete_and_claim"))
    worker.turn()  # the quiet period after a notification that led to nothing (hints.py)
    assert len(worker.jobs.called("complete_and_claim")) == claims
    worker.clock.on_wait = lambda _: worker.jobs.insert("unit.ok")
    worker.turn()  # the poll, one minute later, claims; the insert lands during its wait
    worker.clock.on_wait = None
    worker.db.session.notify("q")
    worker.turn()
    assert len(worker.jobs.called("complete_and_claim")) == claims + 2
    assert [job.status for job in worker.jobs.jobs.values()] == ["running"]


def test_idle_callback_is_called_at_once_then_when_it_asks_and_not_again_after_none(loop):
    calls = []
    answers = iter([5.0, None])

    def idle(conn, idle_s):
        calls.append(idle_s)
        return next(answers)

    worker = loop(idle_callback=idle)
    worker.turns(3)
    assert calls == [0.0, 5.0]
    assert worker.clock.waits == [5.0, 55.0, 60.0]  # then only the poll wakes it

    # Busy, then idle again: the callback starts over.
    worker.jobs.insert("unit.ok")
    answers = iter([None])
    worker.turn()
    worker.finished()
    worker.turns(2)
    assert calls == [0.0, 5.0, 0.0]


def test_stopping_lets_a_running_job_finish_and_reports_it(loop):
    worker = loop()
    job_id = worker.jobs.insert("unit.gate", {"key": "finish"})
    worker.turn()
    worker.worker.stop()
    open_gate("finish")
    worker.finished()
    assert worker.until_exit() == 1
    assert worker.jobs.jobs[job_id].status == "done"
    assert worker.jobs.called("release") == []


def test_job_still_running_when_the_grace_period_ends_is_handed_back(loop, caplog):
    worker = loop(concurrency=2)
    job_id = worker.jobs.insert("unit.gate", {"key": "slow"})
    worker.turn()
    # Started (an unstarted job would go back uncounted, in a release of its own).
    wait_until(lambda: worker.worker._pool.queued() == 0, timeout=5, message="the job's start")
    stopped_at = worker.clock.elapsed()
    worker.worker.stop()
    with caplog.at_level(logging.INFO, "pgdyno"):
        worker.until_exit()
    assert worker.clock.elapsed() - stopped_at == 5.0  # the grace period, no more
    assert worker.jobs.called("release") == [{"ids": [job_id], "keep": []}]
    assert worker.jobs.jobs[job_id].status == "ready"
    assert worker.jobs.jobs[job_id].attempts == 0  # the attempt does not count
    assert [r.msg for r in caplog.records].count("job_handed_back") == 1


def test_immediate_stop_hands_back_at_once(loop):
    worker = loop()
    job_id = worker.jobs.insert("unit.gate", {"key": "now"})
    worker.turn()
    worker.worker.stop(immediate=True)
    assert worker.until_exit() == 1
    assert worker.clock.elapsed() == 10.0  # the one wait before the stop: a heartbeat's
    assert worker.jobs.jobs[job_id].status == "ready"


def test_stopped_idle_worker_exits_without_another_claim(loop):
    worker = loop()
    worker.turn()
    claims = len(worker.jobs.called("complete_and_claim"))
    worker.worker.stop()
    assert worker.until_exit() == 1
    assert len(worker.jobs.called("complete_and_claim")) == claims


def test_burst_worker_exits_once_its_queues_are_drained(loop):
    worker = loop(burst=True)
    first = worker.jobs.insert("unit.ok")
    assert not worker.turn()
    worker.finished()
    assert worker.until_exit() == 1
    assert worker.jobs.jobs[first].status == "done"


def test_failed_job_is_retried_after_a_backoff_and_a_permanent_failure_is_not(loop):
    worker = loop(concurrency=2, retry_base=2.0)
    retried = worker.jobs.insert("unit.fails")
    permanent = worker.jobs.insert("unit.nope")  # unknown task: retrying cannot help
    worker.turn()
    worker.finished(2)
    worker.turn()
    fails = {call["job_id"]: call for call in worker.jobs.called("fail")}
    assert 1.0 <= fails[retried]["retry_in"] < 3.0  # 2 s, with jitter
    assert fails[retried]["error"].startswith("RuntimeError: try again")
    assert fails[permanent]["retry_in"] is None
    assert worker.jobs.jobs[retried].status == "ready"
    assert worker.jobs.jobs[permanent].status == "failed"


def test_last_attempt_fails_without_retry(loop):
    worker = loop()
    job_id = worker.jobs.insert("unit.fails", max_attempts=1)
    worker.turn()
    worker.finished()
    worker.turn()
    assert worker.jobs.called("fail")[0]["retry_in"] is None
    assert worker.jobs.jobs[job_id].status == "failed"


def test_progress_of_a_running_job_is_written_on_the_next_turn(loop):
    worker = loop()
    job_id = worker.jobs.insert("unit.gate", {"key": "progress"})
    worker.turn()
    worker.worker._set_progress(job_id, 1, '{"step": 1}')
    worker.worker._set_progress(job_id, 1, '{"step": 2}')  # only the latest is written
    worker.turn()
    assert worker.jobs.called("set_progress") == [{"job_id": job_id, "progress": {"step": 2}}]


def test_expired_leases_rescued_by_the_poll_are_logged(loop, caplog):
    worker = loop()
    worker.jobs.expired = [{"id": 9, "queue": "q", "status": "ready", "error": "lease expired"}]
    with caplog.at_level(logging.WARNING, "pgdyno"):
        worker.turn()
    assert [r.logfmt["job"] for r in caplog.records if r.msg == "job_rescued"] == [9]


def test_lost_connection_reconnects_keeps_running_jobs_and_claims_again(loop, caplog):
    worker = loop(concurrency=2)
    running = worker.jobs.insert("unit.gate", {"key": "survives"})
    worker.turn()
    worker.jobs.fail_next = psycopg.OperationalError("server closed the connection")
    with caplog.at_level(logging.INFO, "pgdyno"):
        worker.turn()
        assert worker.db.session.closed
        worker.turn()
    assert len(worker.db.sessions) == 2
    # Claims whose answer was lost are handed back; the job still running is kept.
    assert worker.jobs.called("release") == [{"ids": None, "keep": [running]}]
    assert "db_connection_lost" in [r.msg for r in caplog.records]
    assert worker.jobs.calls[-1][0] in ("complete_and_claim", "heartbeat")


def test_reconnect_backs_off_between_failed_attempts(loop, caplog):
    worker = loop()
    worker.turn()
    worker.db.session.lost = True
    worker.db.down = 3
    with caplog.at_level(logging.WARNING, "pgdyno"):
        worker.turn()  # the LISTEN connection is gone
        worker.clock.waits.clear()
        worker.turn()  # reconnects: three refusals, then a session
    assert worker.db.attempts == 1 + 4
    pauses = worker.clock.waits[:3]
    assert 0.05 <= pauses[0] < 0.15 and 0.1 <= pauses[1] < 0.3 and 0.2 <= pauses[2] < 0.6
    unavailable = [r.logfmt for r in caplog.records if r.msg == "db_unavailable"]
    assert [fields["attempt"] for fields in unavailable] == [1, 2, 3]
    assert all(fields["worker"] == "winston.1:1:ab" for fields in unavailable)


def test_stopping_worker_that_cannot_reach_postgres_and_holds_nothing_exits_at_once(loop):
    worker = loop()
    worker.db.down = 1_000
    worker.worker.stop()
    assert worker.turn() is True
    assert worker.db.attempts == 0 and worker.clock.waits == []


def test_timers_wake_at_the_earliest_deadline_and_never_when_none_is_set():
    assert Timers(poll=None).next_wake() is None
    assert Timers(poll=60.0, heartbeat=10.0, due=None, grace=12.0).next_wake() == 10.0
    assert Timers(poll=0.0).next_wake() == 0.0  # "now" is a deadline, not "never"


def test_a_job_claimed_on_registering_as_waiting_that_finished_at_once_leaves_the_due_timer_set(
    loop,
):
    # The look before sleeping (worker/waiting.py) claims a job; it finishes before the next
    # turn, which finds the worker idle again: it must still set the timer for the job
    # scheduled meanwhile (it was left "idle since" before the claim and never set one).
    worker = loop()
    register = worker.jobs.wait_for_jobs
    scheduled: list[int] = []

    def register_then_jobs_arrive(*args, **kwargs):
        if not scheduled:
            worker.jobs.insert("unit.ok")
            scheduled.append(worker.jobs.insert("unit.ok", delay=5.0))
        return register(*args, **kwargs)

    worker.jobs.wait_for_jobs = register_then_jobs_arrive
    worker.turn()  # nothing ready; registers, looks once more: claims the short job
    worker.finished()
    worker.turn()  # reports it; idle again: sleeps until the scheduled job is due
    assert worker.clock.waits[-1] == 5.0
    worker.turn()
    assert worker.jobs.jobs[scheduled[0]].claimed_at == worker.clock.start + 5.0
