"""The worker loop's part in cancelling a running job, turn by turn on fakes (`loop`): a
control notification (or the poll) makes it ask which of its jobs have a request, the task sees
the flag and its on_cancel callbacks run, and the outcome becomes a non-retryable JobCancelled
failure."""

from __future__ import annotations

import time

import pgdyno
from pgdyno.db import CONTROL_PREFIX

callbacks: list[int] = []


@pgdyno.task("unit.until_cancelled")
def until_cancelled() -> str:
    job = pgdyno.current_job()
    job.on_cancel(lambda: callbacks.append(job.id))
    deadline = time.monotonic() + 10
    while not job.cancel_requested and time.monotonic() < deadline:
        time.sleep(0.005)
    return "stopped"


def test_a_cancel_notification_stops_the_task_and_the_job_fails_as_cancelled(loop):
    callbacks.clear()
    worker = loop()
    job_id = worker.jobs.insert("unit.until_cancelled")
    worker.turn()
    assert worker.jobs.jobs[job_id].status == "running"
    worker.jobs.jobs[job_id].cancel_requested = True
    worker.db.session.notify(f"{CONTROL_PREFIX}cancel {job_id}")
    worker.turn()
    assert worker.jobs.called("cancel_requested") == [{"ids": [job_id]}]
    worker.finished()
    worker.turn()
    assert callbacks == [job_id]
    [failed] = worker.jobs.called("fail")
    assert failed["job_id"] == job_id and failed["retry_in"] is None
    assert failed["error"] == "JobCancelled: cancelled while running (the task returned)"
    assert worker.jobs.called("complete_and_claim")[-1]["done"] == []  # not reported done


def test_other_notifications_ask_nothing_and_the_poll_is_the_safety_net(loop):
    worker = loop(concurrency=2)
    job_id = worker.jobs.insert("unit.until_cancelled")
    worker.turn()
    worker.db.session.notify("q", f"{CONTROL_PREFIX}schedules")
    worker.turn()
    assert worker.jobs.called("cancel_requested") == []
    worker.jobs.jobs[job_id].cancel_requested = True  # its notification was lost
    worker.clock.advance(60)  # the poll
    worker.turn()
    assert worker.jobs.called("cancel_requested") == [{"ids": [job_id]}]
    worker.finished()
    worker.turn()
    assert worker.jobs.called("fail")[0]["error"].startswith("JobCancelled")


def test_a_task_that_ignores_the_request_past_the_grace_is_handed_to_on_overdue(loop):
    overdue: list[int] = []
    worker = loop()
    worker.worker._cancels.grace = 5.0
    worker.worker._cancels.on_overdue = overdue.append
    job_id = worker.jobs.insert("unit.gate", {"key": "stubborn"})
    worker.turn()
    worker.jobs.jobs[job_id].cancel_requested = True
    worker.db.session.notify(f"{CONTROL_PREFIX}cancel {job_id}")
    worker.turn()
    assert overdue == []
    worker.clock.advance(6)
    worker.turn()
    assert overdue == [job_id]
    worker.clock.advance(60)
    worker.turn()
    assert overdue == [job_id]  # once
