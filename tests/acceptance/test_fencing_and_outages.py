"""Leases held through trouble (issue 11, scenarios 3, 4 and 8): a failure recorded after a lost
connection, a task that holds the GIL past its lease, an outage longer than the lease.

Real worker processes and Postgres; each job records every start in test_effects, so "ran
once" is counted, not assumed.
"""

from __future__ import annotations

import signal
import time

import psycopg
from helpers import (
    effects_of,
    job_row,
    log_fields,
    open_gate,
    wait_for_listeners,
    wait_for_status,
    wait_until,
    worker,
)

import pgdyno


def _started(conn, key: str) -> None:
    wait_until(lambda: effects_of(conn, key, "start"), message=f"job {key!r} to start")


def _work_connection_pid(conn) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'pgdyno worker %%'"
    ).fetchone()
    return None if row is None else row[0]


def test_failure_finished_while_the_connection_was_lost_is_recorded_not_handed_back(
    effects, database_url
):
    """Scenario 3: the work connection is terminated while two jobs run; one then fails (its
    only attempt). The reconnect must keep it: recorded failed once, never run again."""
    long = pgdyno.enqueue(effects, "safety.gate", {"key": "long"}, queue="q")
    once = pgdyno.enqueue(
        effects, "safety.fail_at_gate", {"key": "once"}, queue="q", max_attempts=1
    )
    extra = ["--poll-interval", "60s", "--lease", "60s"]
    with worker(database_url, "q", concurrency=2, imports=("safety_tasks",), extra=extra) as proc:
        _started(effects, "long")
        _started(effects, "once")
        pid = _work_connection_pid(effects)
        effects.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: _work_connection_pid(effects) != pid, message="the backend to go")
        open_gate(effects, "once")  # it fails now, its outcome to be written on a dead link
        failed = wait_for_status(effects, once, "failed", timeout=30)
        open_gate(effects, "long")
        done = wait_for_status(effects, long, "done")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    assert failed["attempts"] == 1
    assert failed["last_error"].startswith("RuntimeError: once failed on purpose")
    assert len(effects_of(effects, "once", "start")) == 1  # never handed back and re-run
    assert (done["attempts"], len(effects_of(effects, "long", "start"))) == (1, 1)


def test_task_holding_the_gil_past_its_lease_runs_once_in_the_process_pool(effects, database_url):
    """Scenario 4: a 4 s call that never releases the GIL, a 1.5 s lease, a second worker
    looking for expired leases five times a second. In the process pool the worker's loop
    lives in another process than the task: the lease is renewed, the job runs once."""
    extra = ["--pool", "process", "--lease", "1500ms", "--poll-interval", "200ms"]
    with (
        worker(database_url, "q", imports=("safety_tasks",), extra=extra) as first,
        worker(database_url, "q", imports=("safety_tasks",), extra=extra) as second,
    ):
        wait_for_listeners(effects, 2)
        job_id = pgdyno.enqueue(effects, "safety.hold_gil", {"key": "gil", "seconds": 4}, queue="q")
        row = wait_for_status(effects, job_id, "done", timeout=30)
        for proc in (first, second):
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0
        output = first.output() + second.output()
    assert (row["attempts"], row["last_error"], row["result"]) == (1, None, "gil")
    assert len(effects_of(effects, "gil", "start")) == 1
    assert not log_fields(output, "job_rescued")


def test_worker_back_from_an_outage_longer_than_the_lease_keeps_its_jobs(
    fault_server, fault_database_url
):
    """Scenario 8: three jobs run, Postgres stops for twice the lease, then starts. The worker
    renews (or takes back) its own jobs before it rescues anything: each job runs once, on
    its first attempt, and nothing is rescued."""
    url = fault_database_url
    extra = ["--lease", "2s", "--poll-interval", "500ms"]
    with psycopg.connect(url, autocommit=True) as conn:
        jobs = [pgdyno.enqueue(conn, "safety.gate", {"key": f"j{n}"}, queue="q") for n in range(3)]
    with worker(url, "q", concurrency=3, imports=("safety_tasks",), extra=extra) as proc:
        with psycopg.connect(url, autocommit=True) as conn:
            for n in range(3):
                _started(conn, f"j{n}")
        fault_server.stop()
        time.sleep(4)  # the outage itself: twice the lease
        fault_server.start()
        with psycopg.connect(url, autocommit=True) as conn:
            wait_until(
                lambda: log_fields(proc.output(), "db_reconnected"),
                timeout=30,
                message="the worker to reconnect",
            )
            for n in range(3):
                open_gate(conn, f"j{n}")
            rows = [wait_for_status(conn, job, "done", timeout=30) for job in jobs]
            starts = [len(effects_of(conn, f"j{n}", "start")) for n in range(3)]
            history = [job_row(conn, job)["last_error"] for job in jobs]
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        output = proc.output()
    assert [row["attempts"] for row in rows] == [1, 1, 1]
    assert starts == [1, 1, 1]
    assert history == [None, None, None]  # never rescued (no LeaseExpired)
    assert not log_fields(output, "job_rescued")
