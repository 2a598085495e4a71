"""Job timeouts in real worker processes: what they measure and what they free.

- Thread pool: a job past its timeout is abandoned (a thread cannot be stopped), and its thread
  keeps its slot of --concurrency until it really returns; a report's query is cancelled on the
  server at the timeout, so its thread comes back at once.
- Process pool: a timeout counts from the moment the task starts in its process, so a cold
  worker's fork server starting up (importing the task modules) does not eat the first job's
  timeout.

Timeouts here are set through SQL, as any enqueue role may, and are at least 1 second (the
database's lower bound).
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import psycopg
from helpers import effects_of, job_row, open_gate, wait_for_status, wait_until, worker
from psycopg.types.json import Jsonb
from reports_support import write_report

INSERT_WITH_TIMEOUT = (
    "INSERT INTO pgdyno.jobs (queue, task, args, timeout, max_attempts)"
    " VALUES (%s, %s, %s, '1 second', 1) RETURNING id"
)


def _insert(conn: psycopg.Connection, queue: str, task: str, args: dict[str, object]) -> int:
    """A job with a 1 s timeout and a single attempt, enqueued by a plain INSERT."""
    row = conn.execute(INSERT_WITH_TIMEOUT, (queue, task, Jsonb(args))).fetchone()
    assert row is not None
    return int(row[0])


def _most_at_once(conn: psycopg.Connection, keys: list[str]) -> int:
    """The most tasks among `keys` that ever ran at the same time, from their start and done
    rows in test_effects (in the order they were written)."""
    rows = conn.execute(
        "SELECT kind FROM test_effects WHERE job_key = ANY(%s) AND kind IN ('start', 'done')"
        " ORDER BY id",
        (keys,),
    ).fetchall()
    running = most = 0
    for (kind,) in rows:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    return most


def _stop(proc) -> str:
    assert proc.proc.poll() is None, "the worker died:\n" + proc.output()[-3000:]
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    return proc.output()


def test_thread_pool_timed_out_job_keeps_its_slot_until_its_thread_returns(effects, database_url):
    """Four jobs that ignore their 1 s timeout (they wait for a gate the test opens), on a
    worker with --concurrency 2: each times out and fails with JobTimeout, but the worker
    claims the next one only once an abandoned thread has returned, so never more than two
    tasks run at once (the old worker ran all four, and any number, at once)."""
    keys = ["t0", "t1", "t2", "t3"]
    jobs = [_insert(effects, "q", "gate", {"key": key}) for key in keys]
    with worker(database_url, "q", concurrency=2) as proc:
        for job in jobs[:2]:
            row = wait_for_status(effects, job, "failed")
            assert row["last_error"].startswith("JobTimeout: task 'gate' ran longer than its")
            assert "it was abandoned" in row["last_error"]
        proc.wait_for_output("abandoned=2")
        # Each gate opened lets one abandoned thread return, and only then is a job claimed.
        for opened, claimed in ((keys[0], keys[2]), (keys[1], keys[3])):
            open_gate(effects, opened)
            wait_until(lambda key=claimed: effects_of(effects, key, "start"), message=claimed)
        for key in keys[2:]:
            open_gate(effects, key)
        rows = [wait_for_status(effects, job, "failed", "done") for job in jobs]
        wait_until(lambda: len(effects_of(effects, keys[3], "done")) == 1, message="t3 done")
        output = _stop(proc)
    assert _most_at_once(effects, keys) == 2
    assert [row["attempts"] for row in rows] == [1, 1, 1, 1]
    for key in keys:
        assert len(effects_of(effects, key, "start")) == 1
    assert output.count("event=job_abandoned") >= 2
    assert len(re.findall(r"event=abandoned_job_returned .*job=", output)) >= 2


def test_thread_pool_report_past_its_timeout_has_its_query_cancelled(
    effects, database_url, tmp_path: Path
):
    """The tester's report, `SELECT pg_sleep(:s)` with s = 60 and a 1 s timeout, in the thread
    pool: its query is cancelled on the server at the timeout, so its connection leaves
    pg_stat_activity and its thread (and slot) comes back at once, and the next job runs; the
    old worker left the query running for its 60 s, holding a connection."""
    folder = tmp_path / "reports"
    write_report(folder, "slow", "-- Sleeps.\n-- param: s int\nSELECT pg_sleep(%(s)s) AS slept")
    report = _insert(effects, "reports", "report", {"name": "slow", "params": {"s": 60}})
    after = effects.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES"
        " ('reports', 'record', '{\"key\": \"after\"}') RETURNING id"
    ).fetchone()[0]

    def sleeping() -> int:
        return effects.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE '%%pg_sleep%%' AND application_name LIKE %s",
            (f"pgdyno report slow job {report}",),
        ).fetchone()[0]

    with worker(database_url, "reports", PGDYNO_REPORTS_DIR=str(folder)) as proc:
        row = wait_for_status(effects, report, "failed", timeout=30)
        wait_until(lambda: sleeping() == 0, timeout=5, message="the report's query to end")
        assert wait_for_status(effects, after, "done")["attempts"] == 1
        output = _stop(proc)
    assert row["last_error"].startswith("JobTimeout: task 'report' ran longer than its timeout")
    assert re.search(rf"event=abandoned_job_returned .*job={report}\b", output)


def test_process_pool_timeout_does_not_count_the_fork_servers_start(effects, database_url):
    """A cold worker in the process pool whose fork server takes 3 s to import the task modules
    (tests/timeout_tasks.py) runs a quick job with a 1 s timeout on its first attempt; the old
    worker counted the fork server's start against the job and failed it with JobTimeout. A job
    that does run past its timeout is still stopped, 1 s after its task started."""
    quick = _insert(effects, "q", "timeout.hello", {})
    slow = _insert(effects, "q", "timeout.sleep", {"key": "slow", "seconds": 60})
    extra = ["--pool", "process"]
    imports = ("timeout_tasks",)
    slow_start = {"TEST_FORKSERVER_IMPORT_S": "3"}
    with worker(database_url, "q", concurrency=2, imports=imports, extra=extra, **slow_start):
        done = wait_for_status(effects, quick, "done", "failed", timeout=30)
        stopped = wait_for_status(effects, slow, "done", "failed", timeout=30)
    assert (done["status"], done["attempts"], done["last_error"]) == ("done", 1, None)
    assert done["result"] == "hello"
    assert stopped["last_error"].startswith(
        "JobTimeout: task 'timeout.sleep' ran longer than its timeout of 1 s in attempt 1; "
        "its process was stopped"
    )
    # It ran its full second: the clock started when the task did, not when it was claimed.
    started = effects_of(effects, "slow", "start")
    assert len(started) == 1 and not effects_of(effects, "slow", "done")
    ran = (job_row(effects, slow)["finished_at"] - started[0]["at"]).total_seconds()
    assert ran >= 0.9
