"""pgdyno.result and `pgdyno jobs wait`: the outcome of a job, waited for with LISTEN."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from helpers import open_gate, wait_for_status, worker

import pgdyno
from pgdyno import queue, results

pytestmark = pytest.mark.usefixtures("effects")


def test_result_returns_the_value_raises_for_failed_and_cancelled_jobs_and_times_out(
    database_url, conn
):
    with worker(database_url, "results", concurrency=2) as proc:
        done = pgdyno.enqueue(conn, "record", {"key": "a"}, queue="results")
        assert pgdyno.result(conn, done, timeout=30) == {"key": "a"}

        failed = pgdyno.enqueue(
            conn, "boom", {"message": "kaboom"}, queue="results", max_attempts=1
        )
        with pytest.raises(
            pgdyno.JobFailed, match=f"job {failed} failed: RuntimeError: kaboom"
        ) as raised:
            pgdyno.result(database_url, failed, timeout=30)
        assert raised.value.job_id == failed and "Traceback" in raised.value.error

        later = pgdyno.enqueue(conn, "record", {"key": "b"}, queue="results", run_at=3600)
        assert pgdyno.cancel(conn, later) == "cancelled"
        with pytest.raises(pgdyno.JobCancelled, match=f"job {later} was cancelled"):
            pgdyno.result(conn, later)

        slow = pgdyno.enqueue(conn, "gate", {"key": "slow"}, queue="results")
        started = time.monotonic()
        with pytest.raises(pgdyno.ResultTimeout, match=f"job {slow} is still (ready|running)"):
            pgdyno.result(conn, slow, timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 5
        assert isinstance(pgdyno.ResultTimeout("x"), TimeoutError)

        # Woken by the job's NOTIFY, not by the fallback look (FALLBACK_POLL_S, 10 s).
        other = psycopg.connect(database_url, autocommit=True)  # `conn` is busy waiting
        threading.Timer(0.3, open_gate, (other, "slow")).start()
        started = time.monotonic()
        assert pgdyno.result(conn, slow, timeout=30) == {"key": "slow"}
        assert time.monotonic() - started < results.FALLBACK_POLL_S / 2
        other.close()
        assert proc.proc.poll() is None


def test_only_awaited_jobs_notify_when_they_finish(database_url, conn):
    listener = psycopg.connect(database_url, autocommit=True)
    listener.execute("LISTEN pgdyno_finished")
    _quiet, awaited = (pgdyno.enqueue(conn, "t", queue="q") for _ in range(2))
    conn.execute("UPDATE pgdyno.jobs SET awaited = true WHERE id = %s", (awaited,))
    claimed = queue.complete_and_claim(conn, worker="w", queues=["q"], limit=2, lease=30)
    queue.complete_and_claim(
        conn, worker="w", queues=["q"], limit=0, lease=30, done=[(j.id, None) for j in claimed]
    )
    payloads = [n.payload for n in listener.notifies(timeout=1, stop_after=1)]
    assert payloads == [str(awaited)]
    assert [n.payload for n in listener.notifies(timeout=0.2)] == []
    listener.close()


def test_result_inside_an_open_transaction_is_refused(database_url, conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q")
    with psycopg.connect(database_url) as own:
        own.execute("SELECT 1")
        with pytest.raises(pgdyno.PgdynoError, match="cannot wait inside an open transaction"):
            pgdyno.result(own, job_id, timeout=1)
    with pytest.raises(pgdyno.JobNotFound):
        pgdyno.result(conn, 999_999, timeout=1)


def test_jobs_wait_prints_the_result_or_exits_1(cli, conn):
    done = pgdyno.enqueue(conn, "t", queue="q")
    claimed = queue.complete_and_claim(conn, worker="w", queues=["q"], limit=1, lease=30)
    queue.complete_and_claim(
        conn, worker="w", queues=["q"], limit=0, lease=30, done=[(claimed[0].id, '{"rows": 3}')]
    )
    result = cli("jobs", "wait", str(done), "--timeout", "5s")
    assert (result.exit_code, result.stdout) == (0, '{\n  "rows": 3\n}\n')

    waiting = pgdyno.enqueue(conn, "t", queue="q")
    result = cli("jobs", "wait", str(waiting), "--timeout", "200ms")
    assert result.exit_code == 1
    assert f"job {waiting} is still ready after 0.2s of waiting" in result.output

    pgdyno.cancel(conn, waiting)
    result = cli("jobs", "wait", str(waiting))
    assert result.exit_code == 1 and f"job {waiting} was cancelled" in result.output
    assert wait_for_status(conn, waiting, "cancelled")["awaited"] is True
