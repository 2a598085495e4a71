"""enqueue_many's COPY (pgdyno/bulk.py): each id is its job's, whatever columns a batch sets,
every hostile value arrives as itself or is refused, and a refused batch leaves nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum

import psycopg
import pytest
from psycopg.rows import dict_row

import pgdyno
from pgdyno import JobSpec

SCHEDULED = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30)))


def _job(n: int) -> JobSpec:
    """Job n of a batch whose jobs set different columns (most leave most at their default)."""
    return JobSpec(
        task=f"task-{n % 3}",
        args={"n": n} if n % 2 else None,
        queue=f"q{n % 4}",
        priority=n % 7 - 3 if n % 5 == 0 else 0,
        run_at=SCHEDULED if n % 11 == 0 else timedelta(seconds=n) if n % 13 == 0 else None,
        max_attempts=n % 9 + 1 if n % 17 == 0 else None,
        timeout=timedelta(seconds=1 + n, microseconds=7) if n % 19 == 0 else None,
    )


def _stored(conn: psycopg.Connection, ids: list[int]) -> list[dict]:
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute(
        "SELECT j.id, task, args, queue, priority, run_at, max_attempts, timeout, created_at"
        "  FROM unnest(%s::bigint[]) WITH ORDINALITY AS o(id, n)"
        "  JOIN pgdyno.jobs AS j USING (id) ORDER BY o.n",
        (ids,),
    ).fetchall()
    assert len(rows) == len(ids)
    return rows


def test_each_returned_id_is_the_id_of_its_own_job_whatever_columns_jobs_set(conn):
    jobs = [_job(n) for n in range(3000)]
    ids = pgdyno.enqueue_many(conn, jobs)
    assert len(set(ids)) == len(jobs)
    for job, row in zip(jobs, _stored(conn, ids), strict=True):
        n = row["args"].get("n", None)
        assert (row["task"], row["queue"], row["priority"]) == (job.task, job.queue, job.priority)
        assert row["args"] == (job.args or {}) and (n is None or n % 2 == 1)
        assert row["max_attempts"] == (job.max_attempts or 5)
        assert row["timeout"] == job.timeout
        if isinstance(job.run_at, datetime):
            assert row["run_at"] == SCHEDULED
        else:
            delay = job.run_at or timedelta(0)
            assert row["run_at"] - row["created_at"] == delay


def test_a_batch_setting_no_optional_column_takes_every_default(conn):
    ids = pgdyno.enqueue_many(conn, [{"task": "t"}] * 3)
    for row in _stored(conn, ids):
        assert (row["queue"], row["args"], row["priority"], row["max_attempts"]) == (
            "default",
            {},
            0,
            5,
        )
        assert row["timeout"] is None and row["run_at"] == row["created_at"]


HOSTILE_ARGS = {
    "tab\t": "a\tb",
    "newline": "a\nb\r\nc",
    "backslashes": "\\N \\. \\\\ \\t \\x41",
    "end of data": "\n\\.\n",
    "unicode": "é 漢字 \U0001f600",
    "nested": [{"k": "\\"}, None, True, 1.5],
}


@pytest.mark.parametrize(
    "job",
    [
        {"task": "\\N", "queue": "\\", "args": HOSTILE_ARGS},
        {"task": "a\\tb", "queue": "q\\.", "args": {"\\N": "\\N"}},
        {"task": "漢字", "queue": "é", "args": {}},
    ],
)
def test_values_copy_would_read_as_syntax_arrive_as_themselves(conn, job):
    ids = pgdyno.enqueue_many(conn, [{"task": "before"}, job, {"task": "after"}])
    before, stored, after = _stored(conn, ids)
    assert (stored["task"], stored["queue"], stored["args"]) == (
        job["task"],
        job["queue"],
        job["args"],
    )
    assert (before["task"], after["task"]) == ("before", "after")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"task": "t\tx"}, "task_must_not_contain_control_characters"),
        ({"task": "t", "queue": "a\nb"}, "queue_must_not_contain_control_characters"),
        ({"task": "t\x00"}, "0x00"),
        ({"task": "\ud800"}, "cannot be encoded"),
        ({"task": 5}, "task 5 must be a string"),
        ({"task": "t", "queue": ["q"]}, r"queue \[.q.\] must be a string"),
        ({"task": "t", "priority": "5"}, "priority '5' must be an integer"),
        ({"task": "t", "priority": True}, "priority True must be an integer"),
        ({"task": "t", "max_attempts": 2.0}, "max_attempts 2.0 must be an integer"),
        ({"task": "t", "priority": 2**40}, "out of range"),
        ({"task": "t", "args": [1]}, "args must be a JSON object"),
        ({"task": "t", "run_at": datetime(1969, 1, 1, tzinfo=UTC)}, "run_at must be a time from"),
        (
            {
                "task": "t",
                "run_at": datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5))),
            },
            "run_at must be a time from",
        ),
    ],
)
def test_a_bad_job_late_in_a_big_batch_refuses_the_whole_batch(conn, bad, message):
    jobs: list[dict] = [{"task": "ok", "args": {"n": n}} for n in range(2999)]
    jobs.append(bad)
    with pytest.raises(pgdyno.InvalidJob, match=message):
        pgdyno.enqueue_many(conn, jobs)
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


def test_integer_types_that_are_not_int_are_taken(conn):
    class Level(IntEnum):
        HIGH = 9

    [job_id] = pgdyno.enqueue_many(
        conn, [{"task": "t", "priority": Level.HIGH, "max_attempts": Level.HIGH}]
    )
    assert _stored(conn, [job_id])[0]["priority"] == 9


def test_a_refused_batch_in_the_callers_transaction_leaves_its_earlier_batch(conn, database_url):
    with psycopg.connect(database_url) as app:
        kept = pgdyno.enqueue_many(app, [{"task": "t", "priority": 1}] * 5)
        with pytest.raises(pgdyno.InvalidJob):
            pgdyno.enqueue_many(app, [{"task": "t"}] * 100 + [{"task": "t\n"}])
        app.commit()
    assert [r[0] for r in conn.execute("SELECT id FROM pgdyno.jobs ORDER BY id")] == kept


def test_a_time_far_from_utc_is_stored_as_the_same_instant(conn):
    far = datetime(2100, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=-12)))
    [job_id] = pgdyno.enqueue_many(conn, [{"task": "t", "run_at": far}])
    assert _stored(conn, [job_id])[0]["run_at"] == far.astimezone(UTC)
