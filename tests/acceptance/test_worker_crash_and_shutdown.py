"""A job survives its worker: kill -9 (lease expiry and rescue), SIGTERM (grace, hand-back), SIGINT.

The `gate` sample task holds a job running until the test opens its gate, so each signal
certainly lands while the job runs, and the test decides whether it ends within the grace.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta

from helpers import (
    effects_of,
    job_row,
    open_gate,
    wait_for_listeners,
    wait_for_status,
    wait_until,
    worker,
)

import pgdyno


def _wait_until_running(conn, key: str, attempt: int = 1) -> None:
    wait_until(
        lambda: len(effects_of(conn, key, "start")) >= attempt,
        message=f"attempt {attempt} of job {key!r} to start",
    )


def test_job_of_killed_worker_is_rescued_after_its_lease(effects, database_url):
    job_id = pgdyno.enqueue(effects, "gate", {"key": "k"}, queue="q")
    with worker(database_url, "q", extra=["--lease", "1s"]) as doomed:
        _wait_until_running(effects, "k")
        doomed.kill()
    killed = job_row(effects, job_id)  # nobody renews its lease any more
    assert (killed["status"], killed["attempts"]) == ("running", 1)
    open_gate(effects, "k")
    with worker(database_url, "q", extra=["--lease", "1s", "--poll-interval", "0.2s"]) as rescuer:
        row = wait_for_status(effects, job_id, "done")
        rescuer.signal(signal.SIGTERM)
        assert rescuer.wait() == 0
        assert "event=job_rescued" in rescuer.output()
    assert row["attempts"] == 2  # the attempt the killed worker lost counts
    assert row["last_error"].startswith(f"LeaseExpired: worker {killed['worker']} stopped")
    starts = effects_of(effects, "k", "start")
    assert [(s["pid"], s["extra"]["attempt"]) for s in starts] == [
        (doomed.pid, 1),
        (rescuer.pid, 2),
    ]
    assert starts[1]["at"] > killed["lease_expires_at"]  # not one moment before the lease ended
    assert [d["pid"] for d in effects_of(effects, "k", "done")] == [rescuer.pid]


def test_sigterm_during_a_short_job_lets_it_complete_and_exits_0(effects, database_url):
    job_id = pgdyno.enqueue(effects, "gate", {"key": "short"}, queue="q")
    with worker(database_url, "q", extra=["--grace", "20s"]) as proc:
        _wait_until_running(effects, "short")
        proc.signal(signal.SIGTERM)
        proc.wait_for_output("event=shutdown_requested")
        later = pgdyno.enqueue(effects, "record", {"key": "later"}, queue="q")
        open_gate(effects, "short")
        assert proc.wait() == 0
    row = job_row(effects, job_id)
    assert (row["status"], row["attempts"], row["result"]) == ("done", 1, {"key": "short"})
    assert job_row(effects, later)["status"] == "ready"  # a stopping worker claims nothing
    assert effects_of(effects, "later") == []


def test_sigterm_during_a_long_job_hands_it_back_uncounted_for_another_worker(
    effects, database_url
):
    job_id = pgdyno.enqueue(effects, "gate", {"key": "long"}, queue="q")
    with worker(database_url, "q", extra=["--grace", "1s"]) as stopping:
        _wait_until_running(effects, "long")
        stopping.signal(signal.SIGTERM)
        assert stopping.wait() == 0
        assert "event=job_handed_back" in stopping.output()
    handed_back = job_row(effects, job_id)
    assert (handed_back["status"], handed_back["attempts"]) == ("ready", 0)
    assert (handed_back["worker"], handed_back["lease_expires_at"]) == (None, None)
    open_gate(effects, "long")
    with worker(database_url, "q") as other:
        row = wait_for_status(effects, job_id, "done")
        other.signal(signal.SIGTERM)
        assert other.wait() == 0
    assert row["attempts"] == 1
    assert [s["pid"] for s in effects_of(effects, "long", "start")] == [stopping.pid, other.pid]
    assert [d["pid"] for d in effects_of(effects, "long", "done")] == [other.pid]


def test_second_sigint_stops_at_once_and_hands_the_job_back(effects, database_url):
    job_id = pgdyno.enqueue(effects, "gate", {"key": "k"}, queue="q")
    with worker(database_url, "q", extra=["--grace", "60s"]) as proc:
        _wait_until_running(effects, "k")
        proc.signal(signal.SIGINT)
        proc.wait_for_output("event=shutdown_requested")
        started = time.monotonic()
        proc.signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
        assert "immediate=true" in proc.output()
    row = job_row(effects, job_id)
    assert (row["status"], row["attempts"]) == ("ready", 0)


def test_job_longer_than_its_lease_is_not_rescued_while_its_worker_heartbeats(
    effects, database_url
):
    job_id = pgdyno.enqueue(effects, "gate", {"key": "long"}, queue="q")
    with worker(database_url, "q", extra=["--lease", "1s"]) as owner:
        _wait_until_running(effects, "long")
        # A second worker looks for expired leases ten times a second.
        with worker(database_url, "q", extra=["--poll-interval", "0.1s"]) as rescuer:
            wait_for_listeners(effects, 2)  # running (a busy machine can take seconds to start it)
            wait_until(
                lambda: effects.execute(
                    "SELECT now() - started_at > interval '3 s' FROM pgdyno.jobs WHERE id = %s",
                    (job_id,),
                ).fetchone()[0],
                message="the job to outlast its lease three times",
            )
            row = job_row(effects, job_id)
            assert (row["status"], row["attempts"]) == ("running", 1)
            assert row["lease_expires_at"] > row["started_at"] + timedelta(seconds=2)
            open_gate(effects, "long")
            row = wait_for_status(effects, job_id, "done")
            rescuer.signal(signal.SIGTERM)
            assert rescuer.wait() == 0
            assert "job_rescued" not in rescuer.output()
        owner.signal(signal.SIGTERM)
        assert owner.wait() == 0
    assert row["attempts"] == 1
    assert row["last_error"] is None
    assert [s["pid"] for s in effects_of(effects, "long", "start")] == [owner.pid]
