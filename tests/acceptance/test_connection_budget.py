"""How many Postgres connections each pgdyno process holds (Heroku Postgres Essential plans
allow 20): measured in pg_stat_activity while the process idles or runs reports.

The README's connection table comes from this test; a worker at concurrency 1 holds at most 3.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fake_heroku import FakeHeroku
from helpers import PgdynoProcess, wait_until, worker
from reports_support import write_report

import pgdyno

# Each run lasts about 1.5 s, long enough to sample the connections while it runs.
SLOW = "SELECT n, pg_sleep(0.3)::text AS pause FROM generate_series(1, 5) AS n"
# Client backends only: an autovacuum worker on this database is in pg_stat_activity too.
COUNT = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


def _connections(conn) -> int:
    return conn.execute(COUNT).fetchone()[0]


def _peak(conn, seconds: float, until: Callable[[], bool] = lambda: False) -> int:
    """The most connections seen while sampling every 20 ms for `seconds` (or until `until`)."""
    peak, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        peak = max(peak, _connections(conn))
        time.sleep(0.02)
    return peak


def _finished(conn, ids: list[int]) -> bool:
    return conn.execute(
        "SELECT count(*) FROM pgdyno.jobs WHERE id = ANY(%s) AND status = 'done'", (ids,)
    ).fetchone()[0] == len(ids)


def test_the_dispatcher_holds_one_connection(database_url, conn):
    with (
        FakeHeroku(types={"winston": 0}) as heroku,
        PgdynoProcess(
            ["dispatcher", "--scale", "reports=winston", "--reconcile-interval", "0.2s"],
            database_url,
            HEROKU_API_URL=heroku.url,
            HEROKU_APP_NAME=heroku.app,
            HEROKU_API_KEY=heroku.token,
        ) as proc,
    ):
        proc.wait_for_output("event=dispatcher_leading")
        job_id = pgdyno.enqueue(conn, "noop", queue="reports")  # a scale-up decision too
        wait_until(lambda: heroku.requests, message="the dispatcher's API call")
        assert _peak(conn, 1.0) == 1
        conn.execute("DELETE FROM pgdyno.jobs WHERE id = %s", (job_id,))


@pytest.mark.parametrize(("concurrency", "budget"), [(1, 3), (3, 5)])
def test_a_worker_holds_two_connections_plus_one_per_running_report(
    database_url, conn, tmp_path, concurrency, budget
):
    folder = tmp_path / "reports"
    write_report(folder, "slow", SLOW)
    options = ["--poll-interval", "0.2s"]
    with worker(
        database_url,
        "reports",
        concurrency=concurrency,
        imports=(),
        extra=options,
        PGDYNO_REPORTS_DIR=str(folder),
    ) as proc:
        proc.wait_for_output("event=worker_started")
        wait_until(lambda: _connections(conn) == 2, message="the worker's two connections")
        assert _peak(conn, 1.0) == 2  # idle: its work connection and its LISTEN connection
        ids = [
            pgdyno.enqueue(conn, "report", {"name": "slow"}, queue="reports")
            for _ in range(concurrency)
        ]
        busy = _peak(conn, 30, until=lambda: _finished(conn, ids))
        assert _finished(conn, ids), proc.output()[-3000:]
        # Running N reports: one connection per report (its query, then its stored result).
        assert busy == budget == 2 + concurrency
