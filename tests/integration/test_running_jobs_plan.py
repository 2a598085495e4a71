"""EXPLAIN guard: the statements about running jobs read them through the partial index of
running jobs (migration 0013), never the whole of jobs_active with its backlog of ready jobs.

The lease rescue runs on every worker's poll and the dispatcher's timer; before 0013 it read
every ready job too (a sequential scan of jobs_active), so its cost grew with the backlog.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgdyno import sql

RUNNING_INDEX = "jobs_active_running_idx"


@pytest.fixture
def backlog(conn: psycopg.Connection) -> psycopg.Connection:
    """50,000 ready jobs, 200 running ones (some of them with an expired lease), fresh stats."""
    conn.execute("""
        INSERT INTO pgdyno.jobs (queue, task, args)
        SELECT (ARRAY['reports', 'mail'])[1 + n % 2], 'noop', '{}'
          FROM generate_series(1, 50000) AS n""")
    conn.execute("""
        INSERT INTO pgdyno.jobs (queue, task, status, attempts, started_at, worker,
                                 lease_expires_at)
        SELECT 'reports', 'noop', 'running', 1, now(), 'w' || n % 8,
               now() + CASE WHEN n % 20 = 0 THEN interval '-1 s' ELSE interval '30 s' END
          FROM generate_series(1, 200) AS n""")
    conn.execute("ANALYZE pgdyno.jobs_active")
    return conn


def _nodes(conn: psycopg.Connection, statement: str, params: dict[str, Any]) -> list[dict]:
    explained = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchone()[0]

    def walk(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield plan
        for child in plan.get("Plans", []):
            yield from walk(child)

    return list(walk(explained[0]["Plan"]))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("job_rescue_expired", {}),
        ("job_release", {"ids": None, "keep": [], "worker": "w1"}),
        ("job_release", {"ids": [1, 2], "keep": [3], "worker": "w1"}),
        ("web_running_jobs", {"limit": 200}),
    ],
)
def test_statements_about_running_jobs_read_the_running_index_not_the_backlog(
    backlog, name, params
):
    nodes = _nodes(backlog, sql.query(name), params)
    shown = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
    assert any(n.get("Index Name") == RUNNING_INDEX for n in nodes), (name, shown)
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], (name, shown)
    # The primary key only to look jobs up by id: a scan of it filtered on status alone reads
    # the backlog as surely as a sequential scan does.
    for node in nodes:
        if node.get("Index Name") == "jobs_active_pkey":
            assert "(id = " in node.get("Index Cond", ""), (name, node.get("Index Cond"))


def test_the_rescue_still_finds_every_expired_lease(backlog):
    rescued = backlog.execute(sql.query("job_rescue_expired")).fetchall()
    assert len(rescued) == 10  # every 20th of the 200 running jobs
    assert (
        backlog.execute(
            "SELECT count(*) FROM pgdyno.jobs_active"
            " WHERE status = 'running' AND lease_expires_at < now()"
        ).fetchone()[0]
        == 0
    )
