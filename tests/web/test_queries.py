"""EXPLAIN guard: with a million finished jobs (the history bench/web.py measures pages on),
the dashboard's queries use indexes (no sequential scan of the finished partition), whatever
the job list's filters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from bench.web import FINISHED_JOBS, fill_history
from pgdyno import sql

#: Most finished-job rows one page of the list may read (51 shown).
MOST_ROWS_READ = 2_000
#: Most 8 kB pages (index and table) it may touch.
MOST_PAGES = 600
FILTERS = [
    {},
    {"queue": "mail"},
    {"status": "failed"},
    {"status": "cancelled"},
    {"status": "done"},
    {"status": "ready"},
    {"task": "report"},
    {"queue": "mail", "status": "failed"},
    {"queue": "default", "task": "send_invoice", "status": "done"},
    {"before": 500_000},
    {"queue": "mail", "before": 900_000},
]


@pytest.fixture(scope="module")
def big_db(pg_admin_url: str, template_db: str) -> Iterator[psycopg.Connection]:
    name = "pgdyno_web_explain"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = psycopg.conninfo.make_conninfo(pg_admin_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        fill_history(conn, FINISHED_JOBS)
        yield conn
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def plan(
    conn: psycopg.Connection, statement: str, params: dict[str, Any], analyze: bool = False
) -> dict[str, Any]:
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    row = conn.execute(f"EXPLAIN ({options}) {statement}", params, prepare=False).fetchone()
    text = row[0]
    return (json.loads(text) if isinstance(text, str) else text)[0]["Plan"]


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def scans(node: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
        for n in nodes(node)
        if "Scan" in n["Node Type"]
    ]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_the_jobs_list_uses_indexes_on_a_million_finished_jobs(big_db, filters):
    """Run for real (EXPLAIN ANALYZE): a page of 51 jobs reads a few hundred pages at most,
    never the history (without an index on task, 51 report jobs among 1M read 51,000 rows)."""
    params = {"queue": None, "status": None, "task": None, "before": None, "limit": 51}
    root = plan(big_db, sql.query("web_jobs_list"), {**params, **filters}, analyze=True)
    finished = [n for n in nodes(root) if n.get("Relation Name") == "jobs_finished"]
    assert all(n["Node Type"] != "Seq Scan" for n in finished), scans(root)
    read = sum(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) for n in finished)
    assert read <= MOST_ROWS_READ, (read, scans(root))
    pages = root["Shared Hit Blocks"] + root["Shared Read Blocks"]
    assert pages <= MOST_PAGES, (pages, scans(root))


def test_the_overview_and_timeline_never_scan_the_finished_jobs(big_db):
    for name, params in (
        ("web_queue_summary", {"known": ["default"], "others": 20}),
        ("web_queue_rates", {"queues": ["default", "mail"]}),
        (
            "metrics_counters_advance",
            {"settle": timedelta(seconds=10), "known": ["default"], "most": 1000},
        ),
        ("web_report_runs", {"limit": 20}),
        ("web_running_jobs", {"limit": 1000}),
        (
            "web_timeline_minutes",
            {
                "process_type": "winston",
                "range": timedelta(days=7),
                "bucket": timedelta(minutes=28),
            },
        ),
        (
            "web_timeline_samples",
            {
                "process_type": "winston",
                "range": timedelta(days=7),
                "bucket": timedelta(minutes=28),
            },
        ),
    ):
        found = scans(plan(big_db, sql.query(name), params))
        assert ("Seq Scan", "jobs_finished", None) not in found, (name, found)
