"""Normal operation leaves no ERROR line in the Postgres log (issue 11, scenario 10).

A DBA reading the Heroku Postgres logs must not see errors from healthy work. Claims used to
race the cross-partition move of finished jobs ("tuple to be locked was already moved to
another partition due to concurrent update", retried but logged as ERROR by the server). Here
two workers drain a few thousand jobs (one job per claim: the most claims racing the most
completions), then the local platform runs a scale cycle (winston 0 -> 1 -> 0, its job in the
process pool), and the server's log must hold no ERROR line for the test's database.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
from helpers import pgdyno_env, wait_until, worker

import pgdyno
from pgdyno.platform import LocalPlatform

PROCFILE = """\
julia: {pgdyno} dispatcher --scale reports=winston,linger=0
winston: {pgdyno} worker --queue reports --import sample_tasks --pool process
"""


@contextlib.contextmanager
def platform(procfile: Path, url: str) -> Iterator[LocalPlatform]:
    procfile.write_text(PROCFILE.replace("{pgdyno}", f"{sys.executable} -m pgdyno"))
    with (procfile.parent / "platform.log").open("w") as output:
        running = LocalPlatform(procfile, url, output=output, kill_timeout=5, env=pgdyno_env(url))
        running.start()
        try:
            yield running
        finally:
            running.stop()


def _errors(log: Path, offset: int, database: str) -> list[str]:
    with log.open(errors="replace") as handle:
        handle.seek(offset)
        lines = handle.read().splitlines()
    return [line for line in lines if f"db={database} " in line and "ERROR:" in line]


def test_drain_with_two_workers_and_a_scale_cycle_log_no_error(
    fault_server, fault_database_url, tmp_path
):
    url = fault_database_url
    database = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    offset = fault_server.logfile.stat().st_size
    with psycopg.connect(url, autocommit=True) as conn:
        pgdyno.enqueue_many(conn, [pgdyno.JobSpec(task="noop", queue="q")] * 3000)
        with platform(tmp_path / "Procfile", url) as running:
            wait_until(
                lambda: conn.execute("SELECT count(*) FROM pgdyno.scale_rules").fetchone()[0],
                message="the dispatcher to record its rules",
            )
            # The drain (queue q) and the scale cycle (queue reports) at the same time.
            drainers = [worker(url, "q", burst=True, concurrency=1) for _ in range(2)]
            try:
                job_id = pgdyno.enqueue(conn, "record", {"key": "cycle"}, queue="reports")
                wait_until(
                    lambda: (
                        conn.execute(
                            "SELECT status::text FROM pgdyno.jobs WHERE id = %s", (job_id,)
                        ).fetchone()[0]
                        == "done"
                    ),
                    timeout=30,
                    message="the job to run on winston",
                )
                wait_until(
                    lambda: (
                        running.dynos.quantities["winston"] == 0
                        and not running.dynos.alive("winston")
                    ),
                    timeout=30,
                    message="winston to scale back to zero",
                )
                assert [proc.wait(120) for proc in drainers] == [0, 0]
            finally:
                for proc in drainers:
                    proc.close()
        assert conn.execute(
            "SELECT count(*) FROM pgdyno.jobs_finished WHERE status = 'done'"
        ).fetchone() == (3001,)
        assert conn.execute(
            "SELECT array_agg(to_quantity ORDER BY id) FROM pgdyno.scale_events"
        ).fetchone() == ([1, 0],)
    assert _errors(fault_server.logfile, offset, database) == []
