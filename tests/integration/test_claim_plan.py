"""EXPLAIN guard: the claim statement reads ready jobs through the partial claim index.

The jobs table holds a realistic mix (many ready jobs over several queues, running jobs, a long
history of finished ones) with fresh statistics. The plan is checked as a custom plan for
realistic parameters and as the generic plan a prepared statement ends up with (the worker
prepares the claim), forced with plan_cache_mode = force_generic_plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from pgdyno import queue, sql

CLAIM_INDEX = "jobs_active_claim_idx"


@pytest.fixture
def busy_queue(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("""
        INSERT INTO pgdyno.jobs (queue, task, args, priority, run_at)
        SELECT (ARRAY['reports', 'mail', 'default', 'slow'])[1 + n % 4], 'noop', '{}',
               n % 7 - 3, now() - (n % 600) * interval '1 s' + (n % 5) * interval '1 min'
          FROM generate_series(1, 40000) AS n""")
    conn.execute("""
        INSERT INTO pgdyno.jobs (queue, task, status, attempts, started_at, worker,
                                 lease_expires_at)
        SELECT 'reports', 'noop', 'running', 1, now(), 'w' || n % 8, now() + interval '30 s'
          FROM generate_series(1, 400) AS n""")
    conn.execute("""
        INSERT INTO pgdyno.jobs (queue, task, status, attempts, started_at, finished_at)
        SELECT 'reports', 'noop', CASE WHEN n % 50 = 0 THEN 'failed' ELSE 'done' END::text
                                  ::pgdyno.job_status, 1, now(), now() - n * interval '1 s'
          FROM generate_series(1, 60000) AS n""")
    conn.execute("ANALYZE pgdyno.jobs_active, pgdyno.jobs_finished")
    return conn


def _params(conn: psycopg.Connection, queues: list[str], limit: int) -> dict[str, Any]:
    running = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM pgdyno.jobs WHERE status = 'running' AND worker = 'w1' LIMIT %s",
            (limit,),
        )
    ]
    return {
        "done_ids": "{"
        + ",".join(map(str, running))
        + "}",  # as queue.complete_and_claim sends them
        "done_attempt": 1,
        "done_attempts": [1] * len(running),
        "done_results": [None] * len(running),
        "done_peaks": [None] * len(running),
        "queues": queues,
        "limit": limit,
        "worker": "w1",
        "lease": timedelta(seconds=30),
    }


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _assert_uses_the_claim_index(explained: Any, case: object) -> None:
    nodes = list(_nodes(explained[0]["Plan"]))
    scans = {(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes}
    assert any(index == CLAIM_INDEX for _, _, index in scans), (case, scans)
    assert not [s for s in scans if s[0] == "Seq Scan" and s[1] == "jobs_active"], (case, scans)
    # The history is never read (finished jobs are only inserted into it).
    read = {s for s in scans if s[0] != "ModifyTable"}
    assert not [s for s in read if s[1] == "jobs_finished"], (case, scans)


#: (queues, limit): one queue or several, one free slot or many, a queue with no jobs.
CASES = [
    (["reports"], 1),
    (["reports"], 8),
    (["reports", "mail", "slow"], 4),
    (["empty"], 4),
    (["reports", "mail"], 200),
]


def test_claim_plan_uses_the_claim_index_and_no_seq_scan(busy_queue):
    for queues, limit in CASES:
        params = _params(busy_queue, queues, limit)
        explained = busy_queue.execute(
            "EXPLAIN (FORMAT JSON) " + sql.query("job_complete_and_claim"), params
        ).fetchone()[0]
        _assert_uses_the_claim_index(explained, (queues, limit))


def test_prepared_claim_uses_the_claim_index_in_its_generic_plan(busy_queue):
    busy_queue.execute("SET plan_cache_mode = force_generic_plan")
    # Let the worker's own code prepare the statement, then explain that very statement.
    queue.complete_and_claim(busy_queue, worker="nobody", queues=["none"], limit=0, lease=30)
    [(name, param_types)] = busy_queue.execute(
        "SELECT name, parameter_types::text[] FROM pg_prepared_statements"
        " WHERE statement LIKE '%%WITH reported AS%%'"
    ).fetchall()
    # The text the worker sends (its comment lines left out: psycopg numbers the placeholders
    # in the order they appear there).
    order = _placeholder_order(queue.complete_and_claim_text().decode())
    assert len(order) == len(param_types)
    for queues, limit in CASES:
        params = _params(busy_queue, queues, limit)
        explain = pgsql.SQL("EXPLAIN (FORMAT JSON) EXECUTE {}({})").format(
            pgsql.Identifier(name),
            pgsql.SQL(", ").join(
                pgsql.SQL("{}::{}").format(pgsql.Literal(params[key]), pgsql.SQL(type_name))
                for key, type_name in zip(order, param_types, strict=True)
            ),
        )
        plan = busy_queue.execute(explain).fetchone()[0]
        assert busy_queue.execute(
            "SELECT generic_plans > 0 FROM pg_prepared_statements WHERE name = %s", (name,)
        ).fetchone()[0]
        _assert_uses_the_claim_index(plan, (queues, limit))


def _placeholder_order(statement: str) -> list[str]:
    """The statement's named parameters in the order psycopg numbers them ($1, $2, ...)."""
    order: list[str] = []
    for name in re.findall(r"%\((\w+)\)s", statement):
        if name not in order:
            order.append(name)
    return order


def test_the_claim_statement_sent_is_short_enough_for_psycopg_to_cache_its_conversion():
    """psycopg converts a query's %(name)s placeholders at every execution unless the query is
    at most MAX_CACHED_STATEMENT_LENGTH bytes (then the conversion is cached): ~50 µs a
    statement, on the worker's loop thread. The claim statement is sent without its comment
    lines to stay under it; the same statement otherwise (same placeholders)."""
    from psycopg import _queries

    sent = queue.complete_and_claim_text()
    full = sql.query("job_complete_and_claim")
    assert len(sent) <= _queries.MAX_CACHED_STATEMENT_LENGTH < len(full.encode())
    assert set(re.findall(r"%\((\w+)\)s", sent.decode())) == set(re.findall(r"%\((\w+)\)s", full))
    code = [line.strip() for line in full.splitlines() if not line.lstrip().startswith("--")]
    assert [line.strip() for line in sent.decode().splitlines()] == code
