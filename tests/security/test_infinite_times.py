"""Scenario 3 (and 5's ghost) of the security issue: infinite, BC and far-future times.

A client can no longer write one: every time of a job is a finite time from 1970 to 2200, on
every server. Rows written before migration 0009 are repaired by it: on PostgreSQL 15, where
subtracting an infinite time is an error, they stopped the dispatcher at start-up, `pgdyno
status`, idle workers and `jobs list/show/cancel`; on later versions `status --json` printed
Infinity, which is not JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from helpers import wait_for_status
from psycopg.rows import dict_row
from security_support import BOTH_SERVERS, cli, database_at_0005, strict_json

import pgdyno
from pgdyno import sql
from pgdyno.migrate import migrate

BAD_TIMES = ["infinity", "-infinity", "0044-03-15 12:00:00+00 BC", "20000-01-01 00:00:00+00"]


@BOTH_SERVERS
def test_times_outside_1970_to_2200_are_refused_to_every_role(owner, attacker):
    for conn in (attacker, owner):
        for value in BAD_TIMES:
            with pytest.raises(psycopg.errors.CheckViolation) as refused:
                conn.execute(
                    "INSERT INTO pgdyno.jobs (queue, task, run_at) VALUES ('q', 'noop', %s)",
                    (value,),
                )
            assert refused.value.diag.constraint_name == "run_at_must_be_between_1970_and_2200"
    with pytest.raises(pgdyno.InvalidJob, match="run_at must be a time from 1970-01-01"):
        pgdyno.enqueue(owner, "noop", run_at=datetime(2300, 1, 1, tzinfo=UTC))
    assert owner.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


LEGACY_ROWS = """
INSERT INTO pgdyno.jobs (queue, task, run_at)
     VALUES ('q', 'noop', '-infinity'), ('q', 'noop', 'infinity');
INSERT INTO pgdyno.jobs (queue, task, status, worker, lease_expires_at, attempts)
     VALUES ('q', 'noop', 'running', 'ghost:1:0', 'infinity', 1);
INSERT INTO pgdyno.jobs (queue, task, attempts) VALUES ('q', 'noop', 2147483647);
INSERT INTO pgdyno.jobs (queue, task, status, created_at, finished_at, attempts)
     VALUES ('q', 'noop', 'done', '0044-03-15 BC', 'infinity', 1);
"""


@BOTH_SERVERS
def test_rows_written_before_0009_are_repaired_and_nothing_crashes_on_them(server, attack):
    with database_at_0005(server) as url, psycopg.connect(url, autocommit=True) as owner:
        owner.execute(LEGACY_ROWS)
        legacy = [row[0] for row in owner.execute("SELECT id FROM pgdyno.jobs ORDER BY id")]
        assert migrate(owner) == [v for v, _, _ in sql.migrations() if v > 5]
        system = attack(url, owner)
        rows = owner.cursor(row_factory=dict_row).execute(
            "SELECT id, status::text, run_at, created_at, finished_at, lease_expires_at,"
            " attempts, max_attempts, last_error FROM pgdyno.jobs WHERE id = ANY(%s)"
            " ORDER BY id",
            (legacy,),
        )
        *active, finished = rows.fetchall()
        for row in active:  # the four that could never run as their client meant
            assert row["status"] == "failed"
            assert row["last_error"].startswith("InvalidJob: refused by pgdyno migration 0009")
            assert 0 <= row["attempts"] <= row["max_attempts"]
        assert finished["status"] == "done"
        assert (finished["created_at"].year, finished["finished_at"].year) == (1970, 2200)
        # The CLI reads every one of them, as JSON that is JSON.
        listed = cli(url, "jobs", "list", "--json", "--limit", "50")
        assert listed.exit_code == 0, listed.output
        assert {job["id"] for job in strict_json(listed.stdout)} >= set(legacy)
        for job_id in legacy:
            shown = cli(url, "jobs", "show", str(job_id), "--json")
            assert shown.exit_code == 0, shown.output
            strict_json(shown.stdout)
            cancelled = cli(url, "jobs", "cancel", str(job_id))
            assert cancelled.exit_code == 1 and "it has already finished" in cancelled.output
            assert "Traceback" not in cancelled.output
        # So does the dashboard, JSON included.
        from pgdyno.web.app import create_app

        app = create_app(url)
        with app.test_client() as web:
            for path in ["/", "/jobs", *[f"/jobs/{job_id}" for job_id in legacy]]:
                assert web.get(path).status_code == 200, path
            timeline = web.get("/timeline.json")
            assert timeline.status_code == 200
            strict_json(timeline.get_data(as_text=True))
        app.extensions["pgdyno_db"].close()
        assert not [r for r in system.heroku.requests if r.method == "PATCH"]  # no ghost
        system.assert_unharmed(owner)
        scheduled = pgdyno.enqueue(owner, "noop", queue="q", run_at=0.5)
        wait_for_status(owner, scheduled, "done", timeout=30)
        system.stop()
