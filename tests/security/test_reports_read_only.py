"""Scenario 6 of the security issue: reports that are not really read-only.

A read-only transaction stops writes to tables, not functions with side effects. Reports run
on PGDYNO_REPORTS_DATABASE_URL, here a role with SELECT on the report's table and nothing else
(README: "Reports run as a read-only role"), which may not terminate pgdyno's sessions, export
large objects to the server's disk, write through dblink or read server files; and a report
that takes an advisory lock fails whatever its role, since any role may take one.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from helpers import wait_for_status, wait_until
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from reports_support import write_report
from security_support import login_role


def _reports(folder: Path, db: str, owner: psycopg.Connection) -> dict[str, str]:
    """The six reports of the issue (by name: what each would do), as report files."""
    large_object = owner.execute("SELECT lo_from_bytea(0, 'the secret')").fetchone()[0]
    params = conninfo_to_dict(db)
    target = f"host={params['host']} port={params['port']} dbname={params['dbname']} user=postgres"
    reports = {
        "terminate": "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity"
        " WHERE application_name = 'pgdyno dispatcher'",
        "lo_export": f"SELECT lo_export({large_object}, '/tmp/pgdyno-lo-export-{os.getpid()}')",
        "dblink": f"SELECT dblink_exec('{target}', 'CREATE TABLE public.pwned ()') AS done",
        "read_file": "SELECT pg_read_file('PG_VERSION') AS contents",
        "session_lock": "SELECT pg_advisory_lock(4242) AS locked, count(*) FROM public.rows",
        "xact_lock": "SELECT pg_advisory_xact_lock(4343) AS locked, count(*) FROM public.rows",
    }
    for name, query in reports.items():
        write_report(folder, name, query)
    return reports


def test_reports_on_a_select_only_role_cannot_act_beyond_reading(
    db, owner, attacker, attack, tmp_path
):
    owner.execute("CREATE EXTENSION dblink")
    owner.execute("CREATE TABLE public.rows AS SELECT generate_series(1, 10) AS n")
    folder = tmp_path / "reports"
    reports = _reports(folder, db, owner)
    with login_role(owner, "reports_reader") as reader:
        owner.execute(
            pgsql.SQL("GRANT SELECT ON public.rows TO {}").format(pgsql.Identifier(reader))
        )
        system = attack(
            db,
            owner,
            queues=("q", "reports"),
            PGDYNO_REPORTS_DIR=str(folder),
            PGDYNO_REPORTS_DATABASE_URL=make_conninfo(db, user=reader, password="pw-of-the-test"),
        )
        dispatcher_pid = owner.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgdyno dispatcher'"
        ).fetchone()[0]
        jobs = {}
        for name in reports:
            attacker.execute(
                "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('reports', 'report', %s)",
                (psycopg.types.json.Jsonb({"name": name}),),
            )
            jobs[name] = owner.execute("SELECT max(id) FROM pgdyno.jobs").fetchone()[0]
        errors = {
            name: wait_for_status(owner, job_id, "failed")["last_error"]
            for name, job_id in jobs.items()
        }
        assert (
            "permission denied" in errors["lo_export"]
            and "permission denied" in errors["read_file"]
        )
        assert "permission" in errors["terminate"] or "must be a member" in errors["terminate"]
        assert "password" in errors["dblink"]  # dblink: a password is required (not retried)
        for name in ("session_lock", "xact_lock"):
            assert "took an advisory lock" in errors[name]
        # Nothing of it happened: the dispatcher's session lives on, no file, no table.
        assert (
            owner.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (dispatcher_pid,)
            ).fetchone()[0]
            == 1
        )
        assert owner.execute("SELECT to_regclass('public.pwned')").fetchone()[0] is None
        assert not owner.execute(
            "SELECT count(*) FROM pgdyno.report_results WHERE job_id = ANY(%s)",
            (list(jobs.values()),),
        ).fetchone()[0]
        system.assert_unharmed(owner)
        system.stop()


def test_a_report_that_takes_an_advisory_lock_fails_on_the_workers_own_role_too(
    db, owner, tmp_path
):
    from pgdyno.config import Settings
    from pgdyno.errors import InvalidReport
    from pgdyno.reports import runner

    write_report(tmp_path, "locks", "SELECT pg_advisory_lock(77) AS locked")
    try:
        runner.run(Settings(reports_dir=str(tmp_path)), job_id=1, database_url=db, name="locks")
    except InvalidReport as exc:
        assert "took an advisory lock" in str(exc)
    else:
        raise AssertionError("the report ran to the end")
    # Released with the report's session (its end reaches the server a moment after).
    wait_until(
        lambda: (
            not owner.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()[0]
        ),
        message="the report's advisory lock to be released",
    )
