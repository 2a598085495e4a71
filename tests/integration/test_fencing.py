"""The job statements' fencing, and claims racing completions (issue 11, scenarios 4 and 10).

Fencing: a write about a job (done, failed, heartbeat, progress) names the attempt the worker
runs; the database refuses it once the worker no longer holds that attempt, even when the same
worker holds a newer attempt of the job. A rescued attempt that nobody claimed again is taken
back by its worker's heartbeat.

Claims racing completions: eight connections claim one job at a time and complete it in the
next claim, as fast as they can. A claim whose snapshot still saw a job `ready` used to find
it moved to the finished partition and fail with SQLSTATE 40001, logged by Postgres as an
ERROR; finished jobs now leave jobs_active by DELETE, which a claim simply skips.
"""

from __future__ import annotations

import re
import threading
from collections import Counter

import psycopg
from helpers import job_row

import pgdyno
from pgdyno import db, queue, sql
from pgdyno.queue import Finished


def claim(conn, worker="w1", limit=1, done=()):
    return queue.complete_and_claim(
        conn, worker=worker, queues=["q"], limit=limit, lease=30, done=list(done)
    )


def expire_and_rescue(conn, job_id):
    conn.execute(
        "UPDATE pgdyno.jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s", (job_id,)
    )
    assert [r["id"] for r in queue.rescue_expired(conn)] == [job_id]


def test_an_old_attempt_cannot_finish_fail_renew_or_report_over_a_newer_one(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q")
    [first] = claim(conn)
    expire_and_rescue(conn, job_id)
    [second] = claim(conn)  # the same worker claims it again: attempt 2
    assert (first.attempts, second.attempts) == (1, 2)

    stale = claim(conn, limit=0, done=[Finished(job_id, 1, '"stale"')])
    assert stale.refused == [job_id]
    assert queue.fail(conn, worker="w1", job_id=job_id, error="E", retry_in=1, attempt=1) is None
    assert queue.heartbeat(conn, worker="w1", ids=[job_id], lease=600, attempts=[1]) == set()
    progress = '{"step": 1}'
    assert not queue.set_progress(conn, worker="w1", job_id=job_id, progress=progress, attempt=1)
    row = job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["result"], row["progress"]) == (
        "running",
        2,
        None,
        None,
    )

    assert queue.set_progress(conn, worker="w1", job_id=job_id, progress=progress, attempt=2)
    assert claim(conn, limit=0, done=[Finished(job_id, 2, '"fresh"', 123)]).refused == []
    row = job_row(conn, job_id)
    assert (row["status"], row["result"], row["peak_rss_bytes"]) == ("done", "fresh", 123)


def test_a_batch_of_different_attempts_records_only_those_still_held(conn):
    a, b, c = (pgdyno.enqueue(conn, "t", queue="q") for _ in range(3))
    claim(conn, limit=3)
    for job_id in (b, c):
        expire_and_rescue(conn, job_id)
    claim(conn, limit=2)  # b and c again: attempt 2
    batch = [Finished(a, 1, '"a"'), Finished(b, 2, '"b"', 9), Finished(c, 1, '"stale"')]
    assert claim(conn, limit=0, done=batch).refused == [c]
    rows = [job_row(conn, job_id) for job_id in (a, b, c)]
    assert [(r["status"], r["result"], r["peak_rss_bytes"]) for r in rows] == [
        ("done", "a", None),
        ("done", "b", 9),
        ("running", None, None),
    ]


def test_failed_attempt_records_its_peak_memory_and_moves_to_the_history(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q", max_attempts=1)
    claim(conn)
    state = queue.fail(
        conn, worker="w1", job_id=job_id, error="E", retry_in=1, attempt=1, peak_rss_bytes=7
    )
    assert state == "failed"
    assert conn.execute(
        "SELECT tableoid::regclass::text, peak_rss_bytes FROM pgdyno.jobs WHERE id = %s",
        (job_id,),
    ).fetchone() == ("pgdyno.jobs_finished", 7)


def test_heartbeat_takes_back_a_rescued_attempt_nobody_claimed_yet(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q")
    claim(conn)
    expire_and_rescue(conn, job_id)  # the worker was away longer than its lease
    assert queue.heartbeat(conn, worker="w1", ids=[job_id], lease=30, attempts=[1]) == {job_id}
    row = job_row(conn, job_id)
    assert (row["status"], row["worker"], row["attempts"]) == ("running", "w1", 1)
    assert claim(conn, worker="w2") == []  # nothing left for anyone else


def test_heartbeat_cannot_take_back_a_rescued_attempt_another_worker_claimed(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q")
    claim(conn)
    expire_and_rescue(conn, job_id)
    claim(conn, worker="w2")
    assert queue.heartbeat(conn, worker="w1", ids=[job_id], lease=30, attempts=[1]) == set()
    assert job_row(conn, job_id)["worker"] == "w2"


def test_finishing_jobs_keeps_every_column_and_fires_no_trigger_of_the_parent(conn):
    """Finished jobs are re-inserted column by column: every column of pgdyno.jobs must be in
    each INSERT INTO pgdyno.jobs_finished of sql/queue.sql (a migration that adds one must add
    it there). Naming the partitions keeps the parent's statement triggers quiet: no report
    result is deleted, no NOTIFY is sent."""
    columns = {
        name
        for (name,) in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'pgdyno.jobs'::regclass"
            " AND attnum > 0 AND NOT attisdropped"
        )
    }
    text = "\n".join(sql.query(name) for name in ("job_complete_and_claim", "job_fail"))
    text += sql.query("job_rescue_expired")
    lists = re.findall(r"INSERT INTO pgdyno\.jobs_finished \(([^)]*)\)", text)
    assert len(lists) == 3
    for listed in lists:
        assert {name.strip() for name in listed.split(",")} == columns

    job_id = pgdyno.enqueue(conn, "report", {"name": "x"}, queue="q", timeout=5)
    conn.execute(
        "INSERT INTO pgdyno.report_results"
        " (job_id, run_id, report, rows, csv_bytes, stored_bytes, chunks)"
        " VALUES (%s, 1, 'x', 1, 1, 1, 0)",
        (job_id,),
    )
    before = dict(job_row(conn, job_id))
    claim(conn)
    conn.execute("LISTEN pgdyno_jobs")
    claim(conn, limit=0, done=[Finished(job_id, 1, '{"rows": 1}')])
    after = job_row(conn, job_id)
    changed = {"status", "attempts", "started_at", "finished_at", "worker", "result"}
    assert {k: v for k, v in after.items() if k not in changed} == {
        k: v for k, v in before.items() if k not in changed
    }
    assert after["timeout"].total_seconds() == 5
    assert conn.execute(
        "SELECT count(*) FROM pgdyno.report_results WHERE job_id = %s", (job_id,)
    ).fetchone() == (1,)
    assert list(conn.notifies(timeout=0.2)) == []


def test_claims_racing_completions_never_conflict(database_url):
    """Scenario 10's cause: 3,000 jobs, eight connections claiming one at a time."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        pgdyno.enqueue_many(conn, [pgdyno.JobSpec(task="noop", queue="q")] * 3000)
    conflicts: Counter[str] = Counter()
    finished: Counter[int] = Counter()

    def drain(n: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            queue.setup_worker_session(conn)
            done: list[Finished] = []
            while True:
                try:
                    got = claim(conn, worker=f"w{n}", done=done)
                except db.CONFLICTS as exc:
                    conflicts[db.first_line(exc)] += 1
                    continue
                finished[n] += len(done)
                done = [Finished(job.id, job.attempts, None) for job in got]
                if not got:
                    return

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert conflicts == Counter()
    assert sum(finished.values()) == 3000
