"""Unique jobs: while a job with a key is ready or running in its queue, enqueuing the key again
gives that job; once it has finished, the key makes a new job. Python, the CLI, reports, and a
plain SQL client (psql) as the README documents it."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
from features.conftest import count
from helpers import job_row, psql_binary
from reports_support import write_report

import pgdyno
from pgdyno import queue
from pgdyno.errors import InvalidJob

KEY = "daily-revenue-2026-11-30"


def test_50_concurrent_enqueues_of_one_key_give_one_job(database_url, conn):
    barrier = threading.Barrier(50)
    ids: list[int] = []
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                barrier.wait(timeout=30)
                ids.append(
                    pgdyno.enqueue(own, "report", {"name": "x"}, queue="reports", unique_key=KEY)
                )
        except BaseException as exc:  # reported below, with the thread's own traceback
            errors.append(exc)

    threads = [threading.Thread(target=enqueue) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(ids) == 50 and len(set(ids)) == 1
    assert count(conn, "SELECT count(*) FROM pgdyno.jobs WHERE unique_key = %s", (KEY,)) == 1


def test_the_key_is_free_again_once_the_job_has_finished(conn):
    first = pgdyno.enqueue(conn, "t", queue="reports", unique_key=KEY)
    assert queue.enqueue_unique(conn, "t", queue="reports", unique_key=KEY) == (first, False)
    # Running still holds the key.
    assert [
        job.id
        for job in queue.complete_and_claim(conn, worker="w", queues=["reports"], limit=1, lease=30)
    ] == [first]
    assert pgdyno.enqueue(conn, "t", queue="reports", unique_key=KEY) == first
    queue.complete_and_claim(
        conn, worker="w", queues=["reports"], limit=0, lease=30, done=[(first, None)]
    )
    assert job_row(conn, first)["status"] == "done"
    second, added = queue.enqueue_unique(conn, "t", queue="reports", unique_key=KEY)
    assert added and second != first
    # Another queue has its own keys.
    assert pgdyno.enqueue(conn, "t", queue="mail", unique_key=KEY) not in (first, second)


def test_a_unique_enqueue_joins_the_callers_transaction(database_url, conn):
    with psycopg.connect(database_url) as own:  # not autocommit
        job_id = pgdyno.enqueue(own, "t", queue="q", unique_key="k")
        assert pgdyno.enqueue(own, "t", queue="q", unique_key="k") == job_id
        own.rollback()
    assert count(conn, "SELECT count(*) FROM pgdyno.jobs") == 0


@pytest.mark.parametrize("key", ["", "   ", "x" * 201])
def test_a_bad_key_is_refused_saying_why(conn, key):
    with pytest.raises(InvalidJob, match="unique_key must be a non-empty key of at most 200"):
        pgdyno.enqueue(conn, "t", unique_key=key)


def psql(database_url: str, statement: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [psql_binary(), database_url, "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", statement],
        capture_output=True,
        text=True,
        check=False,
    )


def test_plain_sql_is_silent_with_on_conflict_do_nothing_or_an_error_naming_the_key(
    database_url, conn
):
    insert = (
        "INSERT INTO pgdyno.jobs (queue, task, args, unique_key) VALUES "
        "('reports', 'report', '{\"name\": \"revenue\"}', 'daily-revenue') "
    )
    first = psql(database_url, insert + "RETURNING id")
    assert first.returncode == 0, first.stderr
    job_id = int(first.stdout.strip())

    silent = psql(database_url, insert + "ON CONFLICT DO NOTHING RETURNING id")
    assert (silent.returncode, silent.stdout.strip()) == (0, "")

    refused = psql(database_url, insert)
    assert refused.returncode != 0
    assert (
        'violates unique constraint "unique_key_is_taken_by_a_ready_or_running_job"'
        in refused.stderr
    )
    assert "Key (queue, unique_key)=(reports, daily-revenue) already exists." in refused.stderr

    # As documented: the index lives on the active partition, so it cannot be named as the
    # conflict target of an INSERT into pgdyno.jobs.
    targeted = psql(database_url, insert + "ON CONFLICT (queue, unique_key) DO NOTHING")
    assert "no unique or exclusion constraint matching the ON CONFLICT" in targeted.stderr
    assert count(conn, "SELECT count(*) FROM pgdyno.jobs") == 1
    assert job_row(conn, job_id)["unique_key"] == "daily-revenue"


def test_enqueue_unique_key_on_the_command_line(cli, conn):
    first = cli("enqueue", "t", "--queue", "q", "--unique-key", "k1")
    assert first.exit_code == 0, first.output
    again = cli("enqueue", "t", "--queue", "q", "--unique-key", "k1")
    assert again.exit_code == 0
    assert again.stdout == first.stdout
    assert "holds unique key 'k1' (ready or running): no job added" in again.stderr
    assert count(conn, "SELECT count(*) FROM pgdyno.jobs") == 1


def test_report_run_unique_is_one_job_per_report_and_parameters(cli, conn, tmp_path: Path):
    folder = tmp_path / "reports"
    write_report(folder, "by_day", "-- param: since date\nSELECT %(since)s::date AS day")
    env = {"PGDYNO_REPORTS_DIR": str(folder)}
    run = ("report", "run", "by_day", "--unique")
    first = cli(*run, "-p", "since=2026-01-01", **env)
    assert first.exit_code == 0, first.output
    same = cli(*run, "-p", "since=2026-01-01", **env)
    other = cli(*run, "-p", "since=2026-02-01", **env)
    assert same.stdout == first.stdout
    assert "already ready or running as job" in same.stderr
    assert other.stdout != first.stdout
    plain = cli("report", "run", "by_day", "-p", "since=2026-01-01", **env)
    assert plain.stdout not in (first.stdout, other.stdout)  # without --unique: a new job
    keys = [row[0] for row in conn.execute("SELECT unique_key FROM pgdyno.jobs ORDER BY id")]
    assert [key.split(":")[:2] for key in keys[:2]] == [["report", "by_day"]] * 2
    assert keys[0] != keys[1] and keys[2] is None
