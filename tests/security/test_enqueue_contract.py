"""The enqueue contract: `pgdyno grant-enqueue ROLE` makes a role that may INSERT the enqueue
columns and nothing else, the database refuses any other role but pgdyno's own, and the
enqueue role pgdyno documented before (table-level INSERT) is moved onto the contract by
migration 0009."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from security_support import cli, login_role

import pgdyno
from pgdyno import sql
from pgdyno.errors import ConfigError
from pgdyno.migrate import migrate

SYSTEM_COLUMNS = {
    "status": "'done'",
    "attempts": "1",
    "worker": "'w'",
    "lease_expires_at": "now()",
    "result": "'{}'",
    "progress": "'{}'",
    "started_at": "now()",
    "finished_at": "now()",
    "last_error": "'e'",
    "created_at": "now()",
}


def test_grant_enqueue_lets_a_role_insert_the_enqueue_columns_only(db, owner):
    with login_role(owner, "app") as role:
        printed = cli(db, "grant-enqueue", role, "--print")
        assert printed.exit_code == 0 and "GRANT INSERT (queue, task, args" in printed.stdout
        url = make_conninfo(db, user=role, password="pw-of-the-test")
        with (
            psycopg.connect(url, autocommit=True) as client,  # --print changed nothing
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            client.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 't')")
        granted = cli(db, "grant-enqueue", role)
        assert granted.exit_code == 0, granted.output
        with psycopg.connect(url, autocommit=True) as client:
            client.execute(
                "INSERT INTO pgdyno.jobs (queue, task, args, priority, run_at, max_attempts)"
                " VALUES ('q', 't', '{\"n\": 1}', 5, now() + interval '1 minute', 3)"
            )
            for column, value in SYSTEM_COLUMNS.items():
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    client.execute(
                        f"INSERT INTO pgdyno.jobs (queue, task, {column})"
                        f" VALUES ('q', 't', {value})"
                    )
            for statement in (
                "SELECT id FROM pgdyno.jobs",
                "UPDATE pgdyno.jobs SET priority = 1000",
                "DELETE FROM pgdyno.jobs",
                "INSERT INTO pgdyno.jobs_active (queue, task) VALUES ('q', 't')",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    client.execute(statement)
            with pytest.raises(ConfigError, match="grant-enqueue ROLE --returning-id"):
                pgdyno.enqueue(client, "t")
    row = owner.cursor(row_factory=dict_row).execute(
        "SELECT task, args, status::text, attempts, priority, max_attempts FROM pgdyno.jobs"
    )
    assert row.fetchall() == [
        {
            "task": "t",
            "args": {"n": 1},
            "status": "ready",
            "attempts": 0,
            "priority": 5,
            "max_attempts": 3,
        }
    ]


def test_with_returning_id_the_role_gets_the_ids_of_what_it_enqueues_in_order(db, owner):
    with login_role(owner, "app") as role:
        assert cli(db, "grant-enqueue", role, "--returning-id").exit_code == 0
        url = make_conninfo(db, user=role, password="pw-of-the-test")
        with psycopg.connect(url, autocommit=True) as client:
            one = pgdyno.enqueue(client, "t", {"n": -1}, queue="q")
            many = pgdyno.enqueue_many(
                client,
                [{"task": "t", "args": {"n": n}, "queue": "q", "run_at": n} for n in range(50)],
            )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                client.execute("SELECT args FROM pgdyno.jobs")
    stored = dict(owner.execute("SELECT id, (args->>'n')::int FROM pgdyno.jobs").fetchall())
    assert stored[one] == -1 and [stored[job_id] for job_id in many] == list(range(50))


def test_pgdynos_own_role_and_unknown_roles_are_refused(db, owner):
    own = cli(db, "grant-enqueue", "postgres")
    assert own.exit_code == 1 and "is pgdyno's own role" in own.output
    unknown = cli(db, "grant-enqueue", "no_such_role")
    assert unknown.exit_code == 1 and 'role "no_such_role" does not exist' in unknown.output


def test_a_role_that_could_insert_other_columns_is_refused_until_granted_the_contract(db, owner):
    with login_role(owner, "legacy") as role:
        name = pgsql.Identifier(role)
        owner.execute(pgsql.SQL("GRANT USAGE ON SCHEMA pgdyno TO {}").format(name))
        owner.execute(pgsql.SQL("GRANT INSERT ON pgdyno.jobs TO {}").format(name))
        url = make_conninfo(db, user=role, password="pw-of-the-test")
        with psycopg.connect(url, autocommit=True) as client:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                client.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 't')")
            assert (
                refused.value.diag.message_hint
                == f"run `pgdyno grant-enqueue {role}` as the owner of pgdyno"
            )
            assert cli(db, "grant-enqueue", role).exit_code == 0
            client.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 't')")


def test_migration_0009_moves_a_table_level_insert_grant_onto_the_contract(server):
    with server.database() as url, psycopg.connect(url, autocommit=True) as owner:
        owner.execute("DROP SCHEMA pgdyno CASCADE")
        owner.execute(sql.query("schema_create"))
        owner.execute(sql.query("schema_migrations_create"))
        for version, name, text in sql.migrations():
            if version <= 5:
                owner.execute(text)
                owner.execute(
                    sql.query("schema_migration_record"), {"version": version, "name": name}
                )
        with login_role(owner, "rails") as role:
            name = pgsql.Identifier(role)
            owner.execute(pgsql.SQL("GRANT USAGE ON SCHEMA pgdyno TO {}").format(name))
            owner.execute(pgsql.SQL("GRANT INSERT ON pgdyno.jobs TO {}").format(name))
            migrate(owner)
            client_url = make_conninfo(url, user=role, password="pw-of-the-test")
            with psycopg.connect(client_url, autocommit=True) as client:
                client.execute(
                    "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('q', 't', '{}')"
                )
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    client.execute(
                        "INSERT INTO pgdyno.jobs (id, queue, task) OVERRIDING SYSTEM VALUE"
                        " VALUES (1, 'q', 't')"
                    )


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("queue", "reports\u00a0", "queue_must_not_contain_control_characters"),
        ("queue", "\u200breports", "queue_must_not_contain_control_characters"),
        ("task", "hel\u202elo", "task_must_not_contain_control_characters"),
        ("task", "\ufeffreport", "task_must_not_contain_control_characters"),
        # [[:space:]] misses U+1680 where the ctype is C; tag characters render as nothing
        ("queue", "reports\u1680", "queue_must_not_contain_control_characters"),
        ("task", "report\U000e0041", "task_must_not_contain_control_characters"),
        (
            "unique_key",
            "schedule:nightly:2026-12-02T03:00:00Z",
            "unique_key_prefixes_schedule_and_report_are_pgdyno_s_own",
        ),
        (
            "unique_key",
            "report:orders_export:0123",
            "unique_key_prefixes_schedule_and_report_are_pgdyno_s_own",
        ),
        ("timeout", "500 milliseconds", "timeout_must_be_between_1_second_and_1_day"),
    ],
)
def test_look_alike_names_pgdyno_s_own_keys_and_instant_timeouts_are_refused(
    attacker, owner, column, value, rule
):
    """Names that read as another queue's (no worker of it would claim them), unique keys that
    would squat a schedule's run or a `report run --unique` job, and a timeout so short that
    every attempt fails at once (and wakes a dyno per retry) are refused, naming the rule."""
    defaults = {"queue": "q", "task": "t"}
    defaults[column] = value
    columns = ", ".join(defaults)
    with pytest.raises(psycopg.errors.IntegrityError) as refused:
        attacker.execute(
            f"INSERT INTO pgdyno.jobs ({columns}) VALUES ({', '.join(['%s'] * len(defaults))})",
            list(defaults.values()),
        )
    assert refused.value.diag.constraint_name == rule
    assert owner.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0
    if column != "unique_key":  # pgdyno's own role keeps its namespaces, nothing else
        return
    owner.execute(
        "INSERT INTO pgdyno.jobs (queue, task, unique_key) VALUES ('q', 't', %s)", (value,)
    )


def test_result_as_an_enqueue_role_says_which_role_may_wait(enqueue_url, owner):
    job_id = pgdyno.enqueue(owner, "t", queue="q")
    with pytest.raises(ConfigError, match="wait for results with pgdyno's own role"):
        pgdyno.result(enqueue_url, job_id, timeout=1)
