"""The enqueue contract through the active partition (migration 0012): enqueue_many COPYs
straight into pgdyno.jobs_active, so the partition carries the enqueue trigger too. No role gets
past a rule there that the parent enforces: an enqueue role may not write the partition at all,
and a role that was granted it by other means is held to the same rules, privileges included.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from security_support import BOTH_SERVERS, cli, login_role

import pgdyno

COPY_ACTIVE = "COPY pgdyno.jobs_active (queue, task) FROM STDIN"


@BOTH_SERVERS
def test_an_enqueue_role_may_not_write_the_partition(attacker, owner):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        attacker.execute("INSERT INTO pgdyno.jobs_active (queue, task) VALUES ('q', 't')")
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        attacker.cursor().copy(COPY_ACTIVE) as copy,
    ):
        copy.write_row(("q", "t"))
    assert owner.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


@BOTH_SERVERS
def test_a_role_granted_the_whole_partition_is_refused_until_granted_the_contract(db, owner):
    """`GRANT INSERT ON ALL TABLES IN SCHEMA pgdyno` (a stray grant): before 0012 an insert into
    jobs_active skipped every rule of the enqueue trigger; now it is refused as on the parent."""
    with login_role(owner, "stray") as role:
        name = pgsql.Identifier(role)
        owner.execute(pgsql.SQL("GRANT USAGE ON SCHEMA pgdyno TO {}").format(name))
        owner.execute(pgsql.SQL("GRANT INSERT ON ALL TABLES IN SCHEMA pgdyno TO {}").format(name))
        url = make_conninfo(db, user=role, password="pw-of-the-test")
        with psycopg.connect(url, autocommit=True) as client:
            for statement in (
                "INSERT INTO pgdyno.jobs_active (id, queue, task, status, attempts, worker)"
                " OVERRIDING SYSTEM VALUE VALUES (424242, 'q', 't', 'ready', 4, 'ghost')",
                "INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 't')",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                    client.execute(statement)
                assert refused.value.diag.constraint_name == (
                    "enqueue_role_must_only_insert_enqueue_columns"
                )
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege) as refused,
                client.cursor().copy(
                    "COPY pgdyno.jobs_active (id, queue, task) FROM STDIN"
                ) as copy,
            ):
                copy.write_row((424243, "q", "t"))
            assert "may insert columns of pgdyno.jobs_active" in str(refused.value)
            assert cli(db, "grant-enqueue", role).exit_code == 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                client.execute("INSERT INTO pgdyno.jobs_active (queue, task) VALUES ('q', 't')")
    assert owner.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


@BOTH_SERVERS
@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("queue", "reports\u00a0", "queue_must_not_contain_control_characters"),
        ("task", "hel\u202elo", "task_must_not_contain_control_characters"),
        (
            "unique_key",
            "schedule:nightly:x",
            "unique_key_prefixes_schedule_and_report_are_pgdyno_s_own",
        ),
        ("args", '{"s": "' + "x" * (1024 * 1024) + '"}', "args_must_be_at_most_1_mb"),
        ("args", '{"a":' + "[" * 1000 + "]" * 1000 + "}", "args_must_nest_at_most_64_levels"),
    ],
)
def test_a_role_granted_the_enqueue_columns_of_the_partition_keeps_every_rule(
    db, owner, column, value, rule
):
    with login_role(owner, "partition") as role:
        name = pgsql.Identifier(role)
        owner.execute(pgsql.SQL("GRANT USAGE ON SCHEMA pgdyno TO {}").format(name))
        owner.execute(
            pgsql.SQL(
                "GRANT INSERT (queue, task, args, unique_key) ON pgdyno.jobs_active TO {}"
            ).format(name)
        )
        url = make_conninfo(db, user=role, password="pw-of-the-test")
        row = {"queue": "q", "task": "t", column: value}
        names = pgsql.SQL(", ").join(map(pgsql.Identifier, row))
        # Before PostgreSQL 17 a partition has no identity of its own: without an id (which
        # such a role may not set) no row gets into it at all.
        inherits_identity = owner.info.server_version >= 170000
        expected = (
            psycopg.errors.CheckViolation if inherits_identity else psycopg.errors.NotNullViolation
        )
        with psycopg.connect(url, autocommit=True) as client:
            with (
                pytest.raises(expected) as refused,
                client.cursor().copy(
                    pgsql.SQL("COPY pgdyno.jobs_active ({}) FROM STDIN").format(names)
                ) as copy,
            ):
                copy.write_row(list(row.values()))
            if inherits_identity:
                assert refused.value.diag.constraint_name == rule
    assert owner.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


@BOTH_SERVERS
def test_enqueue_many_copies_into_the_partition_and_keeps_each_id_its_jobs(owner):
    jobs = [{"task": f"t{n % 5}", "args": {"n": n}, "queue": f"q{n % 3}"} for n in range(2_000)]
    ids = pgdyno.enqueue_many(owner, jobs)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    stored = {
        job_id: (task, args, queue)
        for job_id, task, args, queue in owner.execute(
            "SELECT id, task, args, queue FROM pgdyno.jobs_active"
        )
    }
    assert [stored[job_id] for job_id in ids] == [
        (job["task"], job["args"], job["queue"]) for job in jobs
    ]
