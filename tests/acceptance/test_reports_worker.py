"""Report jobs run by real `pgdyno worker` processes: bad input fails at once, the CLI follows
and fetches, the demo runs, and a worker killed mid-report loses nothing."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from helpers import wait_until, worker
from reports_support import fetched_csv, job, psql_copy, write_report

import pgdyno
from pgdyno import queue
from pgdyno.cli import main
from pgdyno.demo import shop as demo

BY_DAY = """
    -- Orders per day from a date on.
    -- param: since date
    SELECT d::date AS day, (extract(doy FROM d)::int * 37) %% 101 AS orders
      FROM generate_series(%(since)s::timestamp, %(since)s::timestamp + interval '99 days',
                           interval '1 day') AS d
"""
BY_DAY_PSQL = (
    BY_DAY.split("-- param: since date")[1].replace("%%", "%").replace("%(since)s", "'2026-01-01'")
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "reports"
    write_report(folder, "by_day", BY_DAY)
    write_report(folder, "divide", "SELECT 1 / 0 AS never")
    write_report(folder, "deletes", "DELETE FROM x")
    write_report(folder, "two", "SELECT 1; DROP TABLE x")
    write_report(folder, "cte_delete", "WITH d AS (DELETE FROM x RETURNING *) SELECT * FROM d")
    write_report(folder, "locked", "-- set: lock_timeout = 200ms\nSELECT * FROM busy")
    write_report(tmp_path, "secret", "SELECT 'outside the reports folder'")
    return folder


def _cli(database_url: str, folder: Path, *args: str):
    return CliRunner().invoke(
        main, list(args), env={"DATABASE_URL": database_url, "PGDYNO_REPORTS_DIR": str(folder)}
    )


BAD_INPUT = {
    "unknown report": (
        {"name": "nope"},
        # The row names no folder nor other report (clients read it); the log line does.
        "InvalidReport: unknown report 'nope' (see `pgdyno report list`)",
    ),
    "missing param": (
        {"name": "by_day"},
        "InvalidReport: report 'by_day': missing parameter 'since' (date) (it takes: since date)",
    ),
    "extra param": (
        {"name": "by_day", "params": {"since": "2026-01-01", "until": "2026-02-01"}},
        "InvalidReport: report 'by_day': unknown parameter 'until'",
    ),
    "wrong type": (
        {"name": "by_day", "params": {"since": "last tuesday"}},
        "parameter 'since' must be of type date, got 'last tuesday'",
    ),
    "path escape": (
        {"name": "../secret"},
        "InvalidReport: report name '../secret' escapes the reports folder",
    ),
    "failing SQL": (
        {"name": "divide"},
        "InvalidReport: report 'divide' failed in Postgres: division by zero",
    ),
    "not read-only": ({"name": "deletes"}, "starts with DELETE, so it is not a read-only query"),
    "two statements": ({"name": "two"}, "holds 2 statements"),
    "writing CTE": (
        {"name": "cte_delete"},
        "report 'cte_delete' is not read-only: its plan writes (Delete on x)",
    ),
    "bad store": (
        {"name": "by_day", "params": {"since": "2026-01-01"}, "store": "ftp"},
        "unknown store 'ftp'",
    ),
    "unknown argument": (
        {"name": "by_day", "colour": "red"},
        "InvalidArguments: task 'report' cannot take args",
    ),
}


def test_bad_input_fails_at_once_with_a_message_saying_which(conn, database_url, folder):
    conn.execute(
        "CREATE TABLE x (name text); INSERT INTO x VALUES ('kept');CREATE TABLE busy (a int)"
    )
    ids = {
        case: pgdyno.enqueue(conn, "report", args, queue="reports")
        for case, (args, _) in BAD_INPUT.items()
    }
    retryable = pgdyno.enqueue(conn, "report", {"name": "locked"}, queue="reports")
    with psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")
        with worker(
            database_url,
            "reports",
            burst=True,
            imports=(),
            PGDYNO_REPORTS_DIR=str(folder),
            PGDYNO_RETRY_BASE="60s",
        ) as proc:
            assert proc.wait(60) == 0, proc.output()[-3000:]
    for case, (_, message) in BAD_INPUT.items():
        row = job(conn, ids[case])
        assert (row["status"], row["attempts"]) == ("failed", 1), case  # no retry
        assert message in row["last_error"], (case, row["last_error"])
    # A lock timeout may pass next time: the job waits for its retry.
    row = job(conn, retryable)
    assert (row["status"], row["attempts"]) == ("ready", 1)
    assert "canceling statement due to lock timeout" in row["last_error"]
    assert conn.execute("SELECT array_agg(name) FROM x").fetchone()[0] == ["kept"]


def test_run_wait_show_fetch_through_the_cli(conn, database_url, folder, tmp_path):
    assert _cli(database_url, folder, "report", "list").output.startswith(
        "by_day(since date)\n    Orders per day from a date on.\n"
    )
    refused = _cli(database_url, folder, "report", "run", "by_day", "--param", "since=soon")
    assert refused.exit_code == 2
    assert "parameter 'since' must be of type date, got 'soon'" in refused.output

    with worker(database_url, "reports", imports=(), PGDYNO_REPORTS_DIR=str(folder)) as proc:
        ran = _cli(
            database_url,
            folder,
            "report",
            "run",
            "by_day",
            "--param",
            "since=2026-01-01",
            "--wait",
            "--timeout",
            "60",
        )
        assert ran.exit_code == 0, ran.output
        job_id = int(ran.stdout.strip())
        assert f"job {job_id} done: 100 rows" in ran.stderr
        assert f"pgdyno report fetch {job_id}" in ran.stderr

        failed = _cli(database_url, folder, "report", "run", "divide", "--wait", "--timeout", "60")
        assert failed.exit_code == 1
        assert (
            "failed: InvalidReport: report 'divide' failed in Postgres: division by zero"
            in failed.stderr
        )
        proc.signal(15)
        assert proc.wait() == 0

    shown = _cli(database_url, folder, "report", "show", str(job_id))
    assert shown.exit_code == 0, shown.output
    for expected in (
        "report:      by_day  since=2026-01-01",
        "status:      done (attempt 1/5",
        "rows:        100",
        "peak memory: ",
        f"pgdyno.report_results/{job_id}",
    ):
        assert expected in shown.output
    reference = psql_copy(database_url, BY_DAY_PSQL)
    assert _cli(database_url, folder, "report", "fetch", str(job_id)).stdout_bytes == reference
    out = tmp_path / "by_day.csv"
    assert _cli(database_url, folder, "report", "fetch", str(job_id), "-o", str(out)).exit_code == 0
    assert out.read_bytes() == reference

    # Pruning the job prunes its stored result; finishing it (a partition move) did not.
    assert conn.execute("SELECT count(*) FROM pgdyno.report_chunks").fetchone()[0] > 0
    queue.prune(conn, 0)
    assert conn.execute("SELECT count(*) FROM pgdyno.report_chunks").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pgdyno.report_results").fetchone()[0] == 0


def test_demo_reports_run_on_a_worker(conn, database_url):
    demo.seed(conn, customers=200, orders=5_000)
    ids = demo.enqueue_reports(conn)
    # The demo's reports ship inside the package (the default folder, reports/ in the app
    # root, is what tests/packaging/test_wheel.py's example app uses).
    reports = str(demo.reports_dir())
    with worker(
        database_url, "reports", burst=True, imports=(), PGDYNO_REPORTS_DIR=reports
    ) as proc:
        assert proc.wait(60) == 0, proc.output()[-3000:]
    assert [job(conn, job_id)["status"] for job_id in ids] == ["done"] * len(ids)
    header = next(csv.reader(io.StringIO(fetched_csv(conn, ids[0]).decode())))
    assert header == ["month", "country", "orders", "revenue"]


# About 3 s per run: a pause of 0.1 s every 20,000 rows.
SLOW = """
    SELECT g, md5(g::text) AS hash
      FROM generate_series(1, 600000) AS g
     WHERE g %% 20000 <> 0 OR pg_sleep(0.1)::text = ''
"""


def test_worker_killed_mid_report_is_retried_and_stores_one_whole_result(
    conn, database_url, folder
):
    write_report(folder, "slow", SLOW)
    job_id = pgdyno.enqueue(conn, "report", {"name": "slow"}, queue="reports")
    options = ["--lease", "2s", "--poll-interval", "0.5s"]
    with worker(
        database_url, "reports", imports=(), extra=options, PGDYNO_REPORTS_DIR=str(folder)
    ) as first:
        # Mid-report: rows streamed (spooled; chunks are written after the COPY, on the
        # report's own connection, in one transaction).
        wait_until(
            lambda: (job(conn, job_id)["progress"] or {}).get("rows", 0) > 0,
            timeout=30,
            message="progress of the first run",
        )
        first.kill()
    with worker(
        database_url, "reports", imports=(), extra=options, PGDYNO_REPORTS_DIR=str(folder)
    ) as second:
        wait_until(
            lambda: job(conn, job_id)["status"] == "done",
            timeout=60,
            message="the retried report to finish",
        )
        second.signal(15)
        assert second.wait() == 0
    row = job(conn, job_id)
    assert row["attempts"] == 2
    assert "LeaseExpired" in row["last_error"]
    assert fetched_csv(conn, job_id) == psql_copy(database_url, SLOW.replace("%%", "%"))
    run_id, chunks = conn.execute(
        "SELECT run_id, chunks FROM pgdyno.report_results WHERE job_id = %s", (job_id,)
    ).fetchone()
    assert row["result"]["run_id"] == run_id and row["result"]["rows"] == 600000
    # Only the final run's chunks exist: the killed run's died with its transaction.
    assert conn.execute(
        "SELECT run_id, count(*) FROM pgdyno.report_chunks GROUP BY run_id"
    ).fetchall() == [(run_id, chunks)]
