"""A database where `pgdyno migrate` never ran (or ran for an older pgdyno): every command says
so in one line, the worker and the dispatcher wait for the release phase instead of crashing."""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner
from helpers import PgdynoProcess, wait_for_status, worker
from psycopg.conninfo import make_conninfo

from pgdyno import sql
from pgdyno.cli import main
from pgdyno.migrate import migrate

MIGRATE = "run `pgdyno migrate` (on Heroku, in the release phase: `release: pgdyno migrate`)"


def _cli(url: str, *args: str):
    return CliRunner().invoke(
        main, [*args, "--database-url", url], env={"PGDYNO_LOG_LEVEL": "WARNING"}
    )


COMMANDS = [
    ("status",),
    ("enqueue", "noop"),
    ("jobs", "list"),
    ("jobs", "show", "1"),
    ("jobs", "retry", "1"),
    ("jobs", "cancel", "1"),
    ("prune", "--older-than", "7d"),
    ("report", "run", "x", "--no-check"),
    ("report", "show", "1"),
    ("report", "fetch", "1"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_command_on_an_unmigrated_database_says_run_pgdyno_migrate(empty_url, args):
    result = _cli(empty_url, *args)
    dbname = empty_url.rsplit("dbname=", 1)[-1].split()[0]
    assert result.exit_code == 1
    assert result.output == f"Error: the database '{dbname}' has no pgdyno schema: {MIGRATE}\n"


def test_a_schema_behind_the_code_names_the_missing_migrations(empty_url):
    first = sql.migrations()[0]
    with psycopg.connect(empty_url, autocommit=True) as conn:
        conn.execute(sql.query("schema_create"))
        conn.execute(sql.query("schema_migrations_create"))
        conn.execute(first[2])
        conn.execute(sql.query("schema_migration_record"), {"version": first[0], "name": first[1]})
    result = _cli(empty_url, "status")
    missing = ", ".join(f"{v:04d}" for v, _, _ in sql.migrations()[1:])
    assert result.exit_code == 1
    assert f"is missing pgdyno migrations {missing}: {MIGRATE}" in result.output
    assert _cli(empty_url, "migrate").exit_code == 0
    assert _cli(empty_url, "status").exit_code == 0


def test_migrate_that_finds_no_migrations_is_an_error_and_creates_nothing(
    empty_url, tmp_path, monkeypatch
):
    (tmp_path / "migrations").mkdir()
    monkeypatch.setattr(sql, "sql_dir", lambda: tmp_path)
    result = _cli(empty_url, "migrate")
    assert result.exit_code == 1
    assert result.output == (
        "Error: no migrations found in the pgdyno package: this installation is incomplete; "
        "reinstall pgdyno (pip install --force-reinstall pgdyno)\n"
    )
    with psycopg.connect(empty_url) as conn:
        assert conn.execute("SELECT to_regnamespace('pgdyno')").fetchone()[0] is None


def test_a_worker_started_before_the_release_phase_waits_then_runs_jobs(empty_url):
    with worker(empty_url, "q") as proc:
        proc.wait_for_output("event=db_unavailable")
        assert "run `pgdyno migrate`" in proc.output()
        assert proc.proc.poll() is None, "the worker exited instead of waiting"
        with psycopg.connect(empty_url, autocommit=True) as conn:
            migrate(conn)
            job_id = conn.execute(
                "INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 'noop') RETURNING id"
            ).fetchone()[0]
            wait_for_status(conn, job_id, "done", timeout=30)
        assert "Traceback" not in proc.output()


def test_a_dispatcher_started_before_the_release_phase_waits_then_leads(empty_url):
    args = ["dispatcher", "--scale", "q=winston"]
    env = {"HEROKU_API_URL": "http://127.0.0.1:9", "HEROKU_APP_NAME": "a", "HEROKU_API_KEY": "k"}
    with PgdynoProcess(args, empty_url, **env) as proc:
        proc.wait_for_output("event=db_unavailable")
        assert "has no pgdyno schema: run `pgdyno migrate`" in proc.output()
        with psycopg.connect(empty_url, autocommit=True) as conn:
            migrate(conn)
        proc.wait_for_output("event=dispatcher_leading", timeout=30)
        assert "Traceback" not in proc.output()


def test_a_role_without_the_privilege_gets_one_line_not_a_traceback(conn, database_url):
    conn.execute("CREATE ROLE pgdyno_nobody_cli LOGIN")
    try:
        url = make_conninfo(database_url, user="pgdyno_nobody_cli")
        result = _cli(url, "status")
        assert result.exit_code == 1
        assert result.output == "Error: Postgres refused: permission denied for schema pgdyno\n"
    finally:
        conn.execute("DROP ROLE pgdyno_nobody_cli")
