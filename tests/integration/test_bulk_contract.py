"""Migration 0012: the enqueue contract, checked with less work per row, is the same contract.

The CHECK constraints it rewrote accept exactly the values they accepted (old and new
expressions compared on edge cases under every collation of the server); the enqueue trigger
now also sits on jobs_active, where enqueue_many COPYs, and fires once per statement on the
table the statement names; a bulk batch still wakes a sleeping worker, once per queue.
"""

from __future__ import annotations

import sys
import unicodedata
from collections import Counter
from itertools import pairwise

import psycopg
import pytest
from psycopg import sql as pgsql

import pgdyno
from pgdyno import sleepers

# (constraint, the expression before 0012, the expression 0012 gave it); `v` is the value.
REWRITTEN = [
    (
        "queue_must_be_a_non_empty_name",
        "v ~ '[^[:space:]]' AND length(v) <= 128",
        "((v COLLATE \"C\" >= '!' AND v COLLATE \"C\" < E'\\x7f') OR v ~ '[^[:space:]]')"
        " AND length(v) <= 128",
    ),
    (
        "task_must_be_a_non_empty_name",
        "v ~ '[^[:space:]]' AND length(v) <= 200",
        "((v COLLATE \"C\" >= '!' AND v COLLATE \"C\" < E'\\x7f') OR v ~ '[^[:space:]]')"
        " AND length(v) <= 200",
    ),
    (
        "queue_must_not_start_or_end_with_whitespace",
        "v !~ '^[[:space:]]|[[:space:]]$'",
        "(v COLLATE \"C\" >= '!' AND v COLLATE \"C\" < E'\\x7f'"
        " AND right(v, 1) COLLATE \"C\" >= '!' AND right(v, 1) COLLATE \"C\" < E'\\x7f')"
        " OR v !~ '^[[:space:]]|[[:space:]]$'",
    ),
    (
        "unique_key_must_be_a_non_empty_key_of_at_most_200_characters",
        "v IS NULL OR (v ~ '[^[:space:]]' AND length(v) <= 200)",
        "v IS NULL OR (((v COLLATE \"C\" >= '!' AND v COLLATE \"C\" < E'\\x7f')"
        " OR v ~ '[^[:space:]]') AND length(v) <= 200)",
    ),
]


def _edge_values() -> list[str | None]:
    """Names at the edges: every character Python or Unicode counts as a space or a control,
    the bytes around printable ASCII, empty, and lengths at the bounds."""
    special = {
        chr(c)
        for c in range(sys.maxunicode + 1)
        if chr(c).isspace()
        or unicodedata.category(chr(c)) in ("Zs", "Zl", "Zp", "Cc", "Cf")
        or c in (0x180E, 0x200B, 0x2060, 0xFEFF, 0x3164, 0x115F, 0x1160)
    }
    special.discard("\x00")  # text cannot hold NUL
    edges = {chr(c) for c in (0x1F, 0x20, 0x21, 0x7E, 0x7F, 0x80, 0xFF, 0x100, 0x10FFFF)}
    values: list[str | None] = [None, "", "a", "A", "0", "~", "!", "é", "日本", "\U0001f600"]
    for ch in sorted(special | edges):
        values += [ch, ch * 3, f"a{ch}", f"{ch}a", f"a{ch}b", f"{ch}a{ch}", f"é{ch}", f"{ch}é"]
    for n in (127, 128, 129, 199, 200, 201):
        values += ["a" * n, "é" * n, " " + "a" * (n - 1), "a" * (n - 1) + " ", "日" * n]
    return values


def _collations(conn: psycopg.Connection) -> list[str]:
    """Every collation usable in this database whose character classes may differ: each libc
    one (classes come from its locale), one ICU and one builtin (theirs do not depend on the
    locale), and the database's default."""
    rows = conn.execute(
        "SELECT c.collname, c.collprovider FROM pg_collation AS c"
        " WHERE c.collencoding IN (-1, pg_char_to_encoding(current_setting('server_encoding')))"
        " ORDER BY c.collprovider, c.collname"
    ).fetchall()
    chosen = ["default"]
    seen: set[str] = set()
    for name, provider in rows:
        if provider == "d" or (provider in seen and provider != "c"):
            continue
        try:  # an ICU collation on a build without ICU cannot be used
            conn.execute(pgsql.SQL("SELECT 'a' COLLATE {} ~ 'a'").format(pgsql.Identifier(name)))
        except psycopg.errors.FeatureNotSupported:
            continue
        chosen.append(name)
        seen.add(provider)
    return chosen


def test_printable_ascii_is_no_space_under_any_collation(conn):
    """What the rewritten CHECKs rely on: 0x21-0x7E are no [[:space:]] in any collation."""
    collations = conn.execute(
        "SELECT collname FROM pg_collation"
        " WHERE collencoding IN (-1, pg_char_to_encoding(current_setting('server_encoding')))"
    ).fetchall()
    for (collation,) in [("default",), *collations]:
        try:
            as_space = conn.execute(
                pgsql.SQL(
                    "SELECT array_agg(b) FROM generate_series(33, 126) AS b"
                    " WHERE chr(b) COLLATE {} ~ '[[:space:]]' IS DISTINCT FROM false"
                ).format(pgsql.Identifier(collation))
            ).fetchone()[0]
        except psycopg.errors.FeatureNotSupported:  # an ICU collation on a build without ICU
            continue
        assert as_space is None, collation


@pytest.mark.parametrize(("constraint", "old", "new"), REWRITTEN, ids=[r[0] for r in REWRITTEN])
def test_a_rewritten_name_check_accepts_exactly_what_it_accepted(conn, constraint, old, new):
    values = _edge_values()
    for collation in _collations(conn):
        coll = pgsql.Identifier(collation)
        query = pgsql.SQL(
            "SELECT n, coalesce({old}, true), coalesce({new}, true)"
            "  FROM (SELECT n, x COLLATE {coll} AS v"
            "          FROM unnest(%s::text[]) WITH ORDINALITY AS u(x, n)) AS s"
        ).format(old=pgsql.SQL(old), new=pgsql.SQL(new), coll=coll)
        differ = [
            (values[n - 1], before, after)
            for n, before, after in conn.execute(query, (values,))
            if before != after
        ]
        assert differ == [], (collation, differ[:5])
    # And the table carries the new expression under that name (an INSERT answers as before).
    definition = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'pgdyno.jobs'::regclass AND conname = %s",
        (constraint,),
    ).fetchone()[0]
    assert "'!'" in definition


TIMES = ["created_at", "started_at", "finished_at", "lease_expires_at"]


@pytest.mark.parametrize(
    ("column", "value", "refused"),
    [
        ("timeout", None, False),
        ("timeout", "1 second", False),
        ("timeout", "1 day", False),
        ("timeout", "999999 microseconds", True),
        ("timeout", "1 day 1 microsecond", True),
        ("timeout", "-1 second", True),
        *[(c, None, c == "created_at") for c in TIMES],
        *[(c, "1970-01-01 00:00:00+00", False) for c in TIMES],
        *[(c, "2200-01-01 00:00:00+00", False) for c in TIMES],
        *[(c, "1969-12-31 23:59:59.999999+00", True) for c in TIMES],
        *[(c, "2200-01-01 00:00:00.000001+00", True) for c in TIMES],
        *[(c, "infinity", True) for c in TIMES],
        *[(c, "-infinity", True) for c in TIMES],
    ],
)
def test_times_and_timeout_are_refused_as_before(conn, column, value, refused):
    """A NULL time or timeout passes without being compared, as a NULL comparison did."""
    values = {
        "queue": "q",
        "task": "t",
        "status": "ready" if column == "timeout" else "done",
        "created_at": "2030-01-01 00:00:00+00",
        column: value,
    }
    names = pgsql.SQL(", ").join(map(pgsql.Identifier, values))
    placeholders = pgsql.SQL(", ").join(pgsql.Placeholder(name) for name in values)
    statement = pgsql.SQL("INSERT INTO pgdyno.jobs ({}) OVERRIDING SYSTEM VALUE VALUES ({})")
    insert = statement.format(names, placeholders)
    if not refused:
        conn.execute(insert, values)
        return
    if value is None:  # created_at is NOT NULL
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute(insert, values)
        return
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        conn.execute(insert, values)
    expected = (
        "timeout_must_be_between_1_second_and_1_day"
        if column == "timeout"
        else "times_must_be_between_1970_and_2200"
    )
    assert error.value.diag.constraint_name == expected


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


BAD_ROWS = [
    ("queue", "reports\u00a0", "queue_must_not_contain_control_characters"),
    ("queue", "a\u200bb", "queue_must_not_contain_control_characters"),
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
    for write in ("insert", "copy"):
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            if write == "insert":
                conn.execute(insert, row)
            else:
                with conn.cursor().copy(copy) as copying:
                    copying.write_row(list(row.values()))
        assert refused.value.diag.constraint_name == rule
        assert refused.value.diag.message_primary == (
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
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


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
    """The re-added CHECKs validate the rows already there: every row the old expressions took
    (names with inner spaces, finished jobs with every time set, a running job's lease) is
    taken by the new ones, and the jobs are still there afterwards."""
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
            assert migrate(conn) == [12]
            assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 4
            assert pgdyno.enqueue_many(conn, [{"task": "t", "queue": "a queue"}] * 3)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS pgdyno_before_0012 WITH (FORCE)")
