"""Scenarios 1 and 5 of the security issue, and the bounds of scenario 8: rows an enqueue role
writes to hurt the queue. Each is refused at INSERT, with the same message whatever the table
holds; one that got in anyway (written before the bounds, or by pgdyno's own role) fails alone.
"""

from __future__ import annotations

import psycopg
import pytest
from helpers import job_row, wait_for_status, wait_until
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from security_support import cli, strict_json

import pgdyno
from pgdyno.web.app import create_app


def _state(conn: psycopg.Connection, job_id: int) -> dict:
    """Status, attempts and last error of a job (its args are not read: Python cannot)."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        "SELECT status::text, attempts, last_error FROM pgdyno.jobs WHERE id = %s", (job_id,)
    ).fetchone()


DEEP_ARGS = '{"a":' + "[" * 1000 + "]" * 1000 + "}"
HUGE_NUMBER = '{"n": ' + "9" * 5000 + "}"


def test_columns_only_pgdyno_sets_are_refused_to_the_enqueue_role(db, owner, attacker, attack):
    system = attack(db, owner)
    finished = owner.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, attempts, finished_at)"
        " VALUES ('q', 'noop', 'done', 1, now()) RETURNING id"
    ).fetchone()[0]
    attempts = "INSERT INTO pgdyno.jobs (queue, task, attempts) VALUES ('q', 'x', 2147483647)"
    ghost = (
        "INSERT INTO pgdyno.jobs (queue, task, status, worker, lease_expires_at)"
        " VALUES ('q', 'x', 'running', 'ghost:1:0', 'infinity')"
    )
    for statement in (attempts, ghost):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            attacker.execute(statement)
    # A job id: refused alike whether a job has it or not, so the refusal tells nothing.
    refusals = []
    for job_id in (finished, finished + 1000):
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            attacker.execute(
                "INSERT INTO pgdyno.jobs (id, queue, task) OVERRIDING SYSTEM VALUE"
                " VALUES (%s, 'q', 'noop')",
                (job_id,),
            )
        refusals.append(str(refused.value).replace(str(job_id), "ID"))
    assert refusals[0] == refusals[1]
    assert not [r for r in system.heroku.requests if r.method == "PATCH"]  # no ghost scale-up
    system.assert_unharmed(owner)
    assert owner.execute("SELECT count(*) FROM pgdyno.jobs WHERE task = 'x'").fetchone()[0] == 0
    system.stop()


@pytest.mark.parametrize(
    ("args", "rule"),
    [
        (DEEP_ARGS, "args_must_nest_at_most_64_levels"),
        ('{"s": "' + "x" * (1024 * 1024) + '"}', "args_must_be_at_most_1_mb"),
    ],
    ids=["1000 levels", "1 MB"],
)
def test_args_no_client_could_decode_are_refused_at_insert_naming_the_rule(
    owner, attacker, args, rule
):
    # The bounds hold for every role, pgdyno's own included.
    for conn in (attacker, owner):
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            conn.execute(
                "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('q', 'noop', %s::jsonb)",
                (args,),
            )
        assert refused.value.diag.constraint_name == rule
    assert owner.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


def test_pgdyno_enqueue_says_which_bound_a_job_breaks(owner):
    nested: dict = {}
    for _ in range(70):
        nested = {"a": nested}
    with pytest.raises(pgdyno.InvalidJob, match="args must nest at most 64 levels deep"):
        pgdyno.enqueue(owner, "noop", nested)
    with pytest.raises(pgdyno.InvalidJob, match="args must be at most 1 MB"):
        pgdyno.enqueue_many(owner, [{"task": "noop", "args": {"s": "x" * 1_100_000}}])
    with pytest.raises(
        pgdyno.InvalidJob, match="task must not contain control or invisible characters"
    ):
        pgdyno.enqueue(owner, "noop\x1b[2J", queue="q")


def test_a_poison_job_fails_alone_and_the_jobs_claimed_with_it_run(db, owner, attacker, attack):
    # An integer of 5,000 digits: Postgres takes it, Python refuses to read it (over 4,300).
    attacker.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('q', 'noop', %s::jsonb)",
        (HUGE_NUMBER,),
    )
    # Args 1,000 deep, written past the checks as rows from before migration 0009 were.
    owner.execute("SET session_replication_role = replica")  # the enqueue trigger off
    owner.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('q', 'noop', %s::jsonb)",
        (DEEP_ARGS,),
    )
    owner.execute("RESET session_replication_role")
    poison = [row[0] for row in owner.execute("SELECT id FROM pgdyno.jobs ORDER BY id")]
    innocent = [pgdyno.enqueue(owner, "noop", {"n": n}, queue="q") for n in range(3)]
    system = attack(db, owner)  # concurrency 4: the poison is claimed along with innocent jobs
    for job_id in innocent:
        assert wait_for_status(owner, job_id, "done")["attempts"] == 1
    for job_id in poison:
        row = wait_until(
            lambda job_id=job_id: (r := _state(owner, job_id))["status"] == "failed" and r,
            timeout=30,
            message=f"poison job {job_id} to fail",
        )
        assert row["attempts"] == 1  # no retry: decoding cannot succeed next time
        assert row["last_error"].startswith("InvalidArgs: the job's args cannot be decoded")
        assert "9999" not in row["last_error"] and len(row["last_error"]) < 400
        # The CLI and the dashboard show such a job too, its args marked undecodable.
        shown = cli(db, "jobs", "show", str(job_id), "--json")
        assert shown.exit_code == 0 and "_undecodable" in strict_json(shown.stdout)["args"]
    app = create_app(db)
    with app.test_client() as web:
        assert all(web.get(f"/jobs/{job_id}").status_code == 200 for job_id in poison)
    app.extensions["pgdyno_db"].close()
    system.assert_unharmed(owner)
    system.stop()


def test_last_error_stays_short_for_a_task_called_with_40000_unexpected_keys(
    db, owner, attacker, attack
):
    system = attack(db, owner)
    args = {f"k{n:05d}": n for n in range(40_000)}
    attacker.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('q', 'record', %s)", (Jsonb(args),)
    )
    job_id = owner.execute("SELECT max(id) FROM pgdyno.jobs").fetchone()[0]
    row = wait_for_status(owner, job_id, "failed")
    assert row["last_error"].startswith("InvalidArguments: task 'record' cannot take args")
    assert "and 39990 more" in row["last_error"] and len(row["last_error"]) <= 4000
    assert job_row(owner, job_id)["attempts"] == 1
    system.assert_unharmed(owner)
    system.stop()
