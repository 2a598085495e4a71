"""Scenario 7 of the security issue: secrets in messages, logs, status and rows.

A database URL libpq cannot read is refused in one line that does not quote it; credentials
in HEROKU_API_URL never reach a log line, `pgdyno status` or pgdyno.scale_events; the context
a task can print holds no database URL.
"""

from __future__ import annotations

import psycopg
from helpers import PgdynoProcess, wait_for_status
from psycopg.conninfo import conninfo_to_dict
from security_support import cli, database_at_0005, db_user

import pgdyno
from pgdyno.logfmt import LogfmtFormatter
from pgdyno.migrate import migrate
from pgdyno.platform.postgres import free_port
from pgdyno.scaling.formation.heroku import HerokuFormation
from pgdyno.scaling.policy import parse_rule, policies
from pgdyno.scaling.scaler import Scaler
from pgdyno.scaling.state import record_rules

PASSWORD = "PASS123secret"


def _with_password(url: str, password: str) -> str:
    """`url` as a postgresql:// URL with `password` (the test server trusts, so it is unused)."""
    params = conninfo_to_dict(url)
    return (
        f"postgresql://{params['user']}:{password}@{params['host']}:{params['port']}"
        f"/{params['dbname']}"
    )


def test_a_database_url_with_a_bad_percent_escape_is_refused_without_echoing_it(db):
    bad = _with_password(db, f"wrk%ZZ{PASSWORD}")
    commands = [
        ["worker", "--queue", "q"],
        ["dispatcher", "--scale", "q=winston"],
        ["status"],
        ["enqueue", "noop"],
    ]
    procs = [PgdynoProcess(args, bad, HEROKU_API_KEY="k", HEROKU_APP_NAME="a") for args in commands]
    try:
        for proc in procs:
            assert proc.wait(30) == 1
            output = proc.output()
            assert PASSWORD not in output and "Traceback" not in output, output
            assert "the database URL cannot be read: invalid percent-encoded token" in output
            assert "%25" in output  # says how to write a % in a password
    finally:
        for proc in procs:
            proc.close()


def test_credentials_in_heroku_api_url_stay_out_of_logs_status_and_scale_events(owner, caplog):
    api = f"http://user:{PASSWORD}@127.0.0.1:{free_port()}"  # nothing listens there
    backend = HerokuFormation("my-app", "token-never-shown", api)
    scaler = Scaler(backend, "dispatcher test")
    record_rules(owner, [parse_rule("q=winston")])
    pgdyno.enqueue(owner, "noop", queue="q")
    with caplog.at_level("INFO", "pgdyno"):
        tried = scaler.scale_up(owner, policies([parse_rule("q=winston")])["winston"], "test")
    assert tried.wait == "backoff"  # the failed call holds the type's next calls back
    logged = "\n".join(LogfmtFormatter().format(record) for record in caplog.records)
    status = cli(owner.info.dsn, "status", "--json")
    assert status.exit_code == 0
    events = owner.execute("SELECT outcome FROM pgdyno.scale_events").fetchall()
    errors = owner.execute("SELECT last_error FROM pgdyno.formations").fetchall()
    assert "formation_api" in logged and "cannot reach http://user:***@127.0.0.1" in str(errors)
    for text in (logged, status.output, str(events), str(errors), repr(backend)):
        assert PASSWORD not in text and "token-never-shown" not in text


def test_the_context_a_task_prints_holds_no_database_url(db, owner, attack):
    url = _with_password(db, PASSWORD)
    system = attack(url, owner, imports=("sample_tasks", "attack_tasks"))
    job_id = pgdyno.enqueue(owner, "print_context", queue="q", max_attempts=1)
    row = wait_for_status(owner, job_id, "failed")
    assert row["last_error"].startswith("RuntimeError: failed in JobContext(id=")
    assert PASSWORD not in row["last_error"] and PASSWORD not in system.worker.output()
    assert "running with JobContext(" in system.worker.output()
    assert db_user(db) in str(psycopg.conninfo.conninfo_to_dict(url))
    system.assert_unharmed(owner)
    system.stop()


def test_formation_errors_recorded_before_0009_lose_their_credentials(server):
    with database_at_0005(server) as url, psycopg.connect(url, autocommit=True) as owner:
        leaked = f"error: GET failed (ConnectionError: cannot reach https://user:{PASSWORD}@api)"
        owner.execute(
            "INSERT INTO pgdyno.scale_events (process_type, to_quantity, reason, actor, outcome)"
            " VALUES ('winston', 1, 'r', 'a', %s)",
            (leaked,),
        )
        owner.execute(
            "INSERT INTO pgdyno.formations (process_type, last_error) VALUES ('winston', %s)",
            (leaked,),
        )
        migrate(owner)
        shown = owner.execute(
            "SELECT outcome, last_error FROM pgdyno.scale_events, pgdyno.formations"
        ).fetchone()
    assert shown == (leaked.replace(PASSWORD, "***"),) * 2
