"""Migration 0012: the enqueue contract, checked with less work per row, is the same contract.

The enqueue trigger now also sits on jobs_active, where enqueue_many COPYs: it fires once per
statement on the table the statement names, every rule refuses through either table, for INSERT
and COPY, with the same error; a bulk batch still wakes a sleeping worker, once per queue.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import psycopg
import pytest
from psycopg import sql as pgsql

import pgdyno
from pgdyno import sleepers


def _calls(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
        " WHERE schemaname = 'pgdyno' AND funcname = 'notify_jobs_inserted'"
    ).fetchone()
    return int(row[0])


def test_each_statement_fires_the_enqueue_trigger_once_on_the_table_it_names(conn):
    conn.execute("SET track_functions = 'pl'")
    with conn.transaction():
        conn.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 't'), ('r', 't')")
        assert _calls(conn) == 1  # the parent's; jobs_active's statement trigger did not fire
        pgdyno.enqueue_many(conn, [{"task": "t", "queue": "q"}] * 300)
        assert _calls(conn) == 2  # jobs_active's; the parent's did not fire
        pgdyno.enqueue(conn, "t", queue="q")
        assert _calls(conn) == 3
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 303


def _refusals(conn, insert, params, copy, rows) -> list[psycopg.errors.CheckViolation]:
    """The check violation each write raises: `insert` with `params`, then COPY of `rows`."""
    refusals = []
    for write in ("insert", "copy"):
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            if write == "insert":
                conn.execute(insert, params)
            else:
                with conn.cursor().copy(copy) as copying:
                    for row in rows:
                        copying.write_row(row)
        refusals.append(refused.value)
    return refusals


BAD_ROWS = [
    # the name rules (CHECK constraints before 0014), before the control characters
    ("queue", "", "queue_must_be_a_non_empty_name"),
    ("queue", "q" * 129, "queue_must_be_a_non_empty_name"),
    ("queue", "reports ", "queue_must_not_start_or_end_with_whitespace"),
    ("task", " \t", "task_must_be_a_non_empty_name"),
    ("task", "\treport", "task_must_not_start_or_end_with_whitespace"),
    ("queue", "reports\u00a0", "queue_must_not_contain_control_characters"),
    ("queue", "a\u200bb", "queue_must_not_contain_control_characters"),
    ("queue", "reports\u1680", "queue_must_not_contain_control_characters"),  # 0015
    ("task", "report\U000e0020", "task_must_not_contain_control_characters"),  # 0015
    ("task", "x\ty", "task_must_not_contain_control_characters"),
    ("task", "\ufeffreport", "task_must_not_contain_control_characters"),
    ("args", '{"blob": "' + "x" * 1_100_000 + '"}', "args_must_be_at_most_1_mb"),
    ("args", '{"a": ' * 70 + "1" + "}" * 70, "args_must_nest_at_most_64_levels"),
]


@pytest.mark.parametrize("table", ["pgdyno.jobs", "pgdyno.jobs_active"])
@pytest.mark.parametrize(("column", "value", "rule"), BAD_ROWS, ids=[r[2] for r in BAD_ROWS])
def test_each_trigger_rule_refuses_through_the_parent_and_the_partition_alike(
    conn, table, column, value, rule
):
    row = {"id": 1, "queue": "q", "task": "t", column: value}
    names = pgsql.SQL(", ").join(map(pgsql.Identifier, row))
    target = pgsql.SQL(table)
    insert = pgsql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES ({})").format(
        target, names, pgsql.SQL(", ").join(pgsql.Placeholder(n) for n in row)
    )
    copy = pgsql.SQL("COPY {} ({}) FROM STDIN").format(target, names)
    for refused in _refusals(conn, insert, row, copy, [list(row.values())]):
        assert refused.diag.constraint_name == rule
        assert refused.diag.message_primary == (
            f'new row for relation "jobs" violates check constraint "{rule}"'
        )
    # the least rule name over the rows, as before 0012: a bad queue in one row, big args in
    # another, and a good row between them
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute(
            pgsql.SQL(
                "INSERT INTO {} (id, queue, task, args) OVERRIDING SYSTEM VALUE"
                " VALUES (1, 'q\u00a0', 't', '{{}}'), (2, 'q', 't', '{{}}'),"
                "        (3, 'q', 't', %s)"
            ).format(target),
            ('{"blob": "' + "x" * 1_100_000 + '"}',),
        )
    assert refused.value.diag.constraint_name == "args_must_be_at_most_1_mb"
    # one queue for every row (names checked once): a row's first broken rule is its queue's,
    # so the look-alike queue is named, not the big args of another row
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute(
            pgsql.SQL(
                "INSERT INTO {} (id, queue, task, args) OVERRIDING SYSTEM VALUE"
                " VALUES (1, 'q\u00a0', 't', '{{}}'), (2, 'q\u00a0', 't', %s)"
            ).format(target),
            ('{"blob": "' + "x" * 1_100_000 + '"}',),
        )
    assert refused.value.diag.constraint_name == "queue_must_not_contain_control_characters"
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


@pytest.mark.parametrize("table", ["pgdyno.jobs", "pgdyno.jobs_active"])
def test_rows_of_several_names_are_each_checked_against_the_name_rules(conn, table):
    """Rows of different queues and tasks are checked row by row (0012), name rules included."""
    rows = [(1, "q", "t"), (2, "r", "t"), (3, "r ", "t"), (4, "q", "u")]
    target = pgsql.SQL(table)
    copy = pgsql.SQL("COPY {} (id, queue, task) FROM STDIN").format(target)
    insert = pgsql.SQL(
        "INSERT INTO {} (id, queue, task) OVERRIDING SYSTEM VALUE"
        " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[])"
    ).format(target)
    columns = [list(column) for column in zip(*rows, strict=True)]
    for refused in _refusals(conn, insert, columns, copy, rows):
        assert refused.diag.constraint_name == "queue_must_not_start_or_end_with_whitespace"
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


def test_claims_and_history_check_no_rule_again(conn):
    """A claim, a heartbeat and the move to jobs_finished write rows whose queue, task and args
    were checked on insert: PostgreSQL would run every CHECK of the table again on each (0014).
    The name rules are the trigger's; the other CHECKs are jobs_active's alone."""
    checks = conn.execute(
        "SELECT conrelid::regclass::text, count(*), count(*) FILTER ("
        "         WHERE pg_get_constraintdef(oid) ~ '\\m(queue|task)\\M')"
        "  FROM pg_constraint WHERE contype = 'c'"
        "   AND conrelid IN ('pgdyno.jobs'::regclass, 'pgdyno.jobs_active'::regclass,"
        "                    'pgdyno.jobs_finished'::regclass)"
        " GROUP BY 1"
    ).fetchall()
    assert checks == [("pgdyno.jobs_active", 12, 0)]


def test_enqueue_many_refuses_a_look_alike_queue_with_the_rule_named(conn):
    jobs = [{"task": "t", "queue": "q"}] * 500 + [{"task": "t", "queue": "q\u2007"}]
    with pytest.raises(pgdyno.InvalidJob, match="queue must not contain control or invisible"):
        pgdyno.enqueue_many(conn, jobs)
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


def _received(listener: psycopg.Connection, conn: psycopg.Connection) -> Counter[str]:
    """The notifications of pgdyno_jobs so far (a sentinel sent after marks their end)."""
    conn.execute("SELECT pg_notify('pgdyno_jobs', '--sentinel--')")
    payloads: Counter[str] = Counter()
    for notify in listener.notifies(timeout=15):
        if notify.payload == "--sentinel--":
            return payloads
        payloads[notify.payload] += 1
    raise AssertionError("the sentinel notification never arrived")


def test_a_bulk_batch_wakes_a_sleeping_worker_once_per_queue(conn, database_url):
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN pgdyno_jobs")
        assert sleepers.wait_for_jobs(listener, holder="w1", queues=["q", "r"])
        jobs = [{"task": "t", "queue": ("q", "r", "other")[n % 3]} for n in range(3_000)]
        ids = pgdyno.enqueue_many(conn, jobs)
        assert _received(listener, conn) == {"q": 1, "r": 1}
        # in the caller's transaction: decided at its commit, with its other enqueues
        with conn.transaction():
            pgdyno.enqueue_many(conn, jobs[:10])
            conn.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 't')")
        assert _received(listener, conn) == {"q": 1, "r": 1}
        # jobs due later wake nobody
        pgdyno.enqueue_many(conn, [{"task": "t", "queue": "q", "run_at": 3600}] * 10)
        assert _received(listener, conn) == {}
    stored = dict(conn.execute("SELECT id, queue FROM pgdyno.jobs").fetchall())
    assert [stored[i] for i in ids] == [job["queue"] for job in jobs]


def test_ids_that_are_not_consecutive_are_each_returned_to_their_job(conn):
    """Another session's nextval() between two of a batch's: the reservation sends every id
    (here the sequence steps by 3, so no batch is ever one block of consecutive ids)."""
    conn.execute("ALTER SEQUENCE pgdyno.jobs_id_seq INCREMENT BY 3")
    jobs = [{"task": "t", "args": {"n": n}} for n in range(500)]
    ids = pgdyno.enqueue_many(conn, jobs)
    assert [b - a for a, b in pairwise(ids)] == [3] * 499
    stored = dict(conn.execute("SELECT id, (args->>'n')::int FROM pgdyno.jobs").fetchall())
    assert [stored[i] for i in ids] == list(range(500))
    conn.execute("ALTER SEQUENCE pgdyno.jobs_id_seq INCREMENT BY 1")
    ids = pgdyno.enqueue_many(conn, jobs)
    assert ids == list(range(ids[0], ids[0] + 500))
    stored = dict(conn.execute("SELECT id, (args->>'n')::int FROM pgdyno.jobs").fetchall())
    assert [stored[i] for i in ids] == list(range(500))


def test_migration_0012_keeps_every_row_written_before_it(pg_admin_url, template_db):
    """Migrating a database with jobs in it (ready, running, finished) keeps them, and the new
    trigger takes batches on names the old rules took (inner spaces, non-ASCII)."""
    from pgdyno import sql
    from pgdyno.migrate import migrate

    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS pgdyno_before_0012")
        admin.execute("CREATE DATABASE pgdyno_before_0012")
    url = psycopg.conninfo.make_conninfo(pg_admin_url, dbname="pgdyno_before_0012")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.query("schema_create"))
            conn.execute(sql.query("schema_migrations_create"))
            for version, name, text in sql.migrations():
                if version < 12:
                    with conn.transaction():
                        conn.execute(text)
                        conn.execute(
                            sql.query("schema_migration_record"), {"version": version, "name": name}
                        )
            conn.execute(
                "INSERT INTO pgdyno.jobs (queue, task, unique_key, timeout) VALUES"
                " ('a queue', 'é task', 'k k', '1 day'), ('日本', '\u00e9', NULL, NULL)"
            )
            conn.execute(
                "INSERT INTO pgdyno.jobs (queue, task, status, attempts, started_at, finished_at)"
                " VALUES ('q', 't', 'done', 1, now(), now())"
            )
            conn.execute(
                "INSERT INTO pgdyno.jobs (queue, task, status, attempts, started_at,"
                " lease_expires_at, worker) VALUES ('q', 't', 'running', 1, now(), now(), 'w')"
            )
            assert migrate(conn) == [v for v, _, _ in sql.migrations() if v >= 12]
            assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 4
            assert pgdyno.enqueue_many(conn, [{"task": "t", "queue": "a queue"}] * 3)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS pgdyno_before_0012 WITH (FORCE)")


@pytest.mark.parametrize("autocommit", [True, False])
def test_a_batch_refused_while_its_ids_are_reserved_leaves_the_connection_usable(
    database_url, autocommit
):
    """enqueue_many encodes the batch while the reservation runs (pipeline mode): a value
    refused then (a queue that is no string) leaves no pipeline, no job, and a connection that
    enqueues the next batch; inside the caller's transaction, its earlier work stays."""
    with psycopg.connect(database_url, autocommit=autocommit) as app:
        kept = pgdyno.enqueue_many(app, [{"task": "t"}] * 3)
        with pytest.raises(pgdyno.InvalidJob, match="queue 7 must be a string"):
            pgdyno.enqueue_many(app, [{"task": "t"}] * 1000 + [{"task": "t", "queue": 7}])
        assert app.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
        kept += pgdyno.enqueue_many(app, [{"task": "t"}] * 2)
        if not autocommit:
            app.commit()
        ids = [row[0] for row in app.execute("SELECT id FROM pgdyno.jobs ORDER BY id")]
    assert ids == kept
