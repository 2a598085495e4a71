"""pgdyno.enqueue and enqueue_many: in the caller's transaction, all or nothing, refused clearly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from helpers import job_row, wait_until

import pgdyno
from pgdyno import JobSpec


def _count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0]


def test_enqueue_stores_every_field_and_returns_the_id(conn):
    job_id = pgdyno.enqueue(
        conn, "send_invoice", {"id": 7, "to": ["a@b.c"]}, queue="mail", priority=-3, max_attempts=9
    )
    row = job_row(conn, job_id)
    assert (row["queue"], row["task"], row["args"], row["priority"], row["max_attempts"]) == (
        "mail",
        "send_invoice",
        {"id": 7, "to": ["a@b.c"]},
        -3,
        9,
    )
    assert (row["status"], row["attempts"]) == ("ready", 0)


def test_enqueue_defaults_to_the_default_queue_and_the_schema_attempt_budget(conn):
    row = job_row(conn, pgdyno.enqueue(conn, "t"))
    assert (row["queue"], row["args"], row["priority"], row["max_attempts"]) == (
        "default",
        {},
        0,
        5,
    )
    assert row["run_at"] == row["created_at"]


def test_enqueue_delay_counts_from_the_database_clock(conn):
    for delay in (90, 90.0, timedelta(seconds=90)):
        row = job_row(conn, pgdyno.enqueue(conn, "t", run_at=delay))
        assert row["run_at"] - row["created_at"] == timedelta(seconds=90)


def test_enqueue_at_an_absolute_time(conn):
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert job_row(conn, pgdyno.enqueue(conn, "t", run_at=when))["run_at"] == when


def test_enqueue_joins_the_callers_transaction(conn, database_url):
    with psycopg.connect(database_url) as app:
        kept = pgdyno.enqueue(app, "t")
        assert _count(conn) == 0  # not visible to workers before commit
        app.commit()
        pgdyno.enqueue(app, "t")
        app.rollback()
    assert [r[0] for r in conn.execute("SELECT id FROM pgdyno.jobs")] == [kept]


def test_enqueue_with_a_url_uses_and_closes_its_own_connection(conn, database_url):
    job_id = pgdyno.enqueue(database_url, "t", {"n": 1})
    assert job_row(conn, job_id)["args"] == {"n": 1}
    wait_until(
        lambda: (
            conn.execute(  # a closed session's backend exits a moment later
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            == 0
        ),
        message="its connection to close",
    )


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"task": ""}, "task must be a non-empty name"),
        ({"task": "t", "queue": " "}, "queue must be a non-empty name"),
        ({"task": "t", "priority": 5000}, "priority must be between -1000 and 1000"),
        ({"task": "t", "max_attempts": 0}, "max_attempts must be between 1 and 1000"),
    ],
)
def test_enqueue_of_a_bad_job_raises_invalid_job_saying_what_to_fix(conn, kwargs, hint):
    with pytest.raises(pgdyno.InvalidJob, match=f"^job refused: {hint}"):
        pgdyno.enqueue(conn, kwargs.pop("task"), **kwargs)
    assert _count(conn) == 0


def test_enqueue_of_args_that_are_not_an_object_is_refused_by_the_database(conn):
    with pytest.raises(pgdyno.InvalidJob, match="args must be a JSON object"):
        pgdyno.enqueue(conn, "t", [1, 2])  # type: ignore[arg-type]
    assert _count(conn) == 0


def test_enqueue_many_returns_ids_in_order_and_stores_each_job(conn):
    when = datetime(2030, 1, 1, tzinfo=UTC)
    ids = pgdyno.enqueue_many(
        conn,
        [
            JobSpec("a", {"n": 1}, queue="q1", priority=2, max_attempts=1),
            {"task": "b", "args": {"n": 2}, "run_at": when},
            JobSpec("c", run_at=timedelta(seconds=30)),
        ],
    )
    assert ids == sorted(ids)
    rows = [job_row(conn, job_id) for job_id in ids]
    assert [(r["task"], r["queue"], r["args"], r["priority"], r["max_attempts"]) for r in rows] == [
        ("a", "q1", {"n": 1}, 2, 1),
        ("b", "default", {"n": 2}, 0, 5),
        ("c", "default", {}, 0, 5),
    ]
    assert rows[1]["run_at"] == when
    assert rows[2]["run_at"] - rows[2]["created_at"] == timedelta(seconds=30)
    assert rows[0]["run_at"] == rows[0]["created_at"]


def test_enqueue_many_of_nothing_inserts_nothing(conn):
    assert pgdyno.enqueue_many(conn, []) == []
    assert _count(conn) == 0


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ({"task": ""}, "task must be a non-empty name"),
        ({"task": "t", "priority": -1001}, "priority must be between -1000 and 1000"),
        ({"task": "t", "max_attempts": 0}, "max_attempts must be between 1 and 1000"),
        ({"task": "t", "queue": ""}, "queue must be a non-empty name"),
    ],
)
def test_enqueue_many_with_one_bad_job_inserts_nothing(conn, bad, hint):
    jobs = [{"task": "ok", "args": {"n": n}} for n in range(500)]
    jobs.insert(250, bad)
    with pytest.raises(pgdyno.InvalidJob, match=f"^job refused: {hint}"):
        pgdyno.enqueue_many(conn, jobs)
    assert _count(conn) == 0


def test_enqueue_many_joins_the_callers_transaction(conn, database_url):
    with psycopg.connect(database_url) as app:
        pgdyno.enqueue_many(app, [{"task": "t"}] * 3)
        assert _count(conn) == 0
        app.rollback()
        ids = pgdyno.enqueue_many(app, [{"task": "t"}] * 2)
        app.commit()
    assert [r[0] for r in conn.execute("SELECT id FROM pgdyno.jobs ORDER BY id")] == ids


def test_bad_job_in_the_callers_transaction_leaves_its_earlier_work_intact(conn, database_url):
    with psycopg.connect(database_url) as app:
        kept = pgdyno.enqueue(app, "t")
        with pytest.raises(pgdyno.InvalidJob):
            pgdyno.enqueue_many(app, [{"task": "t"}, {"task": "t", "priority": 10**4}])
        app.commit()
    assert [r[0] for r in conn.execute("SELECT id FROM pgdyno.jobs")] == [kept]
