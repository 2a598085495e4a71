"""Cancelling a running job: the worker learns within a second, a report's query is cancelled
on the server, a Python task sees current_job().cancel_requested, and the job ends cancelled,
never retried, whatever path it takes (failure, retry, hand-back, lease expiry)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from features.conftest import count
from helpers import effects_of, job_row, wait_for_status, wait_until, worker
from reports_support import write_report

import pgdyno
from pgdyno import db, queue
from pgdyno.worker.cancels import CancelWatch

pytestmark = pytest.mark.usefixtures("effects")


def running(conn, queue_name: str = "q") -> int:
    job_id = pgdyno.enqueue(conn, "t", queue=queue_name)
    assert queue.complete_and_claim(conn, worker="w", queues=[queue_name], limit=1, lease=30)
    return job_id


# --- the statements ------------------------------------------------------------------------------


def test_a_failure_after_a_cancel_request_ends_cancelled_not_retried(conn):
    job_id = running(conn)
    assert pgdyno.cancel(conn, job_id) == "cancel_requested"
    assert queue.fail(conn, worker="w", job_id=job_id, error="JobCancelled: x", retry_in=5.0) == (
        "cancelled"
    )
    row = job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "cancelled",
        1,
        "JobCancelled: x",
    )
    assert row["finished_at"] is not None


def test_a_cancel_requested_job_handed_back_or_rescued_ends_cancelled(conn):
    handed_back, expired, untouched = running(conn), running(conn), running(conn)
    for job_id in (handed_back, expired):
        pgdyno.cancel(conn, job_id)
    assert queue.release(conn, worker="w", ids=[handed_back, untouched]) == [handed_back, untouched]
    conn.execute(
        "UPDATE pgdyno.jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s", (expired,)
    )
    assert [r["status"] for r in queue.rescue_expired(conn)] == ["cancelled"]
    statuses = [job_row(conn, j)["status"] for j in (handed_back, expired, untouched)]
    assert statuses == ["cancelled", "cancelled", "ready"]
    # Retrying a cancelled job forgets the request: it runs normally again.
    queue.retry_job(conn, handed_back)
    assert job_row(conn, handed_back)["cancel_requested_at"] is None


def test_cancel_reaches_the_worker_through_a_notification(database_url, conn):
    listener = db.connect(database_url)
    db.listen(listener, db.CONTROL_CHANNEL)
    job_id = running(conn)
    pgdyno.cancel(conn, job_id)
    wait_until(
        lambda: db.drain_notifications(listener) == [f"\x00cancel {job_id}"] or None,
        timeout=5,
        message="the cancel notification",
    )
    watch = CancelWatch("w")
    watch.notified([f"{db.CONTROL_PREFIX}cancel {job_id}"])
    watch.check(conn, [job_id], now=0.0)
    assert pgdyno.worker.cancels.is_requested("w", job_id)
    listener.close()


# --- real workers ----------------------------------------------------------------------------


def test_cancelling_a_60s_report_and_a_cooperative_task(database_url, conn, cli, tmp_path: Path):
    folder = tmp_path / "reports"
    write_report(folder, "sleepy", "-- A minute of nothing.\nSELECT pg_sleep(60) AS slept")
    with worker(database_url, "reports", concurrency=2, PGDYNO_REPORTS_DIR=str(folder)) as proc:
        report = pgdyno.enqueue(conn, "report", {"name": "sleepy"}, queue="reports")
        coop = pgdyno.enqueue(conn, "cooperative", {"key": "coop"}, queue="reports")

        def sleeping() -> int:
            return count(
                conn,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND query LIKE %s AND application_name LIKE %s",
                ("%pg_sleep(60)%", f"pgdyno report sleepy job {report}"),
            )

        wait_until(sleeping, timeout=30, message="the report's query to run")
        wait_until(lambda: effects_of(conn, "coop", "start"), message="the task to start")

        asked = time.monotonic()
        result = cli("jobs", "cancel", str(report))
        assert result.exit_code == 0, result.output
        assert "its worker was asked to stop it" in result.output
        wait_for_status(conn, report, "cancelled", timeout=10)
        assert time.monotonic() - asked < 2.0
        wait_until(
            lambda: sleeping() == 0, timeout=2, message="the query to leave pg_stat_activity"
        )

        assert pgdyno.cancel(conn, coop) == "cancel_requested"
        wait_for_status(conn, coop, "cancelled", timeout=10)
        assert effects_of(conn, "coop", "cancel_seen")

        for job_id in (report, coop):
            row = job_row(conn, job_id)
            assert row["attempts"] == 1 and row["result"] is None
            assert row["last_error"].startswith("JobCancelled: cancelled while running")
        assert (
            "QueryCanceled" in job_row(conn, report)["last_error"]
            or "cancel" in job_row(conn, report)["last_error"]
        )
        assert proc.proc.poll() is None  # the worker goes on
        after = pgdyno.enqueue(conn, "record", {"key": "after"}, queue="reports")
        wait_for_status(conn, after, "done")
        assert "event=cancel_requested" in proc.output()


def test_cancelling_a_report_in_the_process_pool_stops_its_process_and_its_query(
    database_url, conn, cli, tmp_path: Path
):
    """With --pool process the job's process cannot read the cancel flag: the worker kills it at
    once, and the report's query leaves the server within a second or so (the report session
    sets client_connection_check_interval), although nobody cancelled it there."""
    folder = tmp_path / "reports"
    write_report(folder, "sleepy", "-- A minute of nothing.\nSELECT pg_sleep(60) AS slept")
    with worker(
        database_url, "reports", extra=["--pool", "process"], PGDYNO_REPORTS_DIR=str(folder)
    ) as proc:
        report = pgdyno.enqueue(conn, "report", {"name": "sleepy"}, queue="reports")

        def sleeping() -> int:
            return count(
                conn,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND query LIKE %s AND application_name LIKE %s",
                ("%pg_sleep(60)%", f"pgdyno report sleepy job {report}"),
            )

        wait_until(sleeping, timeout=30, message="the report's query to run")
        asked = time.monotonic()
        result = cli("jobs", "cancel", str(report))
        assert result.exit_code == 0, result.output
        wait_for_status(conn, report, "cancelled", timeout=10)
        assert time.monotonic() - asked < 2.0
        wait_until(
            lambda: sleeping() == 0, timeout=5, message="the query to leave pg_stat_activity"
        )
        row = job_row(conn, report)
        assert row["attempts"] == 1 and row["result"] is None
        assert row["last_error"].startswith("JobCancelled: cancelled while running")
        assert "process was stopped" in row["last_error"]
        assert proc.proc.poll() is None  # the worker goes on
        after = pgdyno.enqueue(conn, "record", {"key": "after-process"}, queue="reports")
        wait_for_status(conn, after, "done")
