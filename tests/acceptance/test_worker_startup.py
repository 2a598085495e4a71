"""A worker's start-up: what it does not import until a job needs it, and the built-in report
task, registered at start and imported on its first job, in either pool."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO_DIR, pgdyno_env, wait_for_status, worker
from reports_support import write_report

import pgdyno

STARTUP = """
import inspect, json, sys
import pgdyno
from pgdyno import tasks

worker = pgdyno.build_worker(
    ["startup"], settings=pgdyno.Settings(database_url=sys.argv[1]), burst=True
)
exit_code = worker.run()  # connects, claims nothing, exits
report = tasks.lookup("report")
print(json.dumps({
    "exit_code": exit_code,
    "loaded": sorted(
        m for m in sys.modules
        if m.startswith(("pgdyno.reports.", "multiprocessing", "pgdyno.schedules", "cronsim"))
    ),
    "periodic": callable(pgdyno.periodic),
    "report_args": list(inspect.signature(report).parameters),
}))
"""


def test_a_worker_runs_without_the_report_runner_multiprocessing_or_schedules(
    database_url,
):
    done = subprocess.run(
        [sys.executable, "-c", STARTUP, database_url],
        env=pgdyno_env(database_url),
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["exit_code"] == 0
    assert seen["loaded"] == ["pgdyno.reports.task"]
    assert seen["report_args"] == ["name", "params", "store", "url", "headers", "spool"]
    assert seen["periodic"]  # the public name still works, imported when asked for


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_the_first_report_job_of_a_worker_imports_the_runner_and_runs(
    conn, database_url, tmp_path, pool
):
    folder = tmp_path / "reports"
    write_report(folder, "numbers", "SELECT n FROM generate_series(1, 3) AS n")
    job_id = pgdyno.enqueue(conn, "report", {"name": "numbers"}, queue="reports")
    bad = pgdyno.enqueue(conn, "report", {"name": "no_such_report"}, queue="reports")
    with worker(
        database_url,
        "reports",
        burst=True,
        imports=(),
        extra=["--pool", pool],
        PGDYNO_REPORTS_DIR=str(folder),
    ) as proc:
        assert proc.wait(60) == 0, proc.output()[-3000:]
    row = wait_for_status(conn, job_id, "done")
    assert row["result"]["rows"] == 3
    failed = wait_for_status(conn, bad, "failed")
    assert failed["attempts"] == 1  # an unknown report is not retried
    assert "no_such_report" in failed["last_error"]
