"""What each dashboard page shows, read from Postgres. No Flask here: plain dicts in, out.

Statements come from pgdyno/sql/web.sql (and the queue's and scaling's own reads). Secrets
never leave this module: error texts that may quote a URL go through `redact`.

To add what a later feature stores (a workers registry, paused queues, Retry-After waits,
schedules), add a function here that returns None while its table does not exist
(`table_exists`), and a block in the page's template that shows it when it is not None.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgdyno import queue, sql
from pgdyno.errors import InvalidReport
from pgdyno.logfmt import redact_dsn
from pgdyno.reports import catalog
from pgdyno.scaling.state import scaling_status
from pgdyno.web import sampler

#: Jobs per page of the jobs list.
PAGE_SIZE = 50
_SECRET_WORDS = re.compile(r"((?:api[_-]?key|token|secret|password)\s*[=:]\s*)\S+", re.IGNORECASE)


def redact(text: str | None) -> str | None:
    """Text for a page: DSN passwords and `token=...`-like values replaced by ***."""
    if text is None:
        return None
    return _SECRET_WORDS.sub(r"\1***", redact_dsn(text))


def table_exists(conn: psycopg.Connection, name: str) -> bool:
    """Whether pgdyno.NAME exists (for panels of features that may not have landed)."""
    row = conn.execute(sql.query("web_table_exists"), {"name": f"pgdyno.{name}"}).fetchone()
    return bool(row and row[0])


def count_finished(conn: psycopg.Connection, read_only: bool) -> None:
    """Bring the finished-job counters up to date (a few seconds' window of the finished_at
    index), so the counts move even when no dispatcher is sampling. Not in read-only mode."""
    if not read_only:
        sampler.advance_counters(conn)


def queues(conn: psycopg.Connection) -> dict[str, Any]:
    """Per queue: ready (due), scheduled, running, done, failed, cancelled, the oldest due
    ready job's age (s), throughput (finished jobs per minute over the last hour of samples)."""
    rows = conn.cursor(row_factory=dict_row).execute(sql.query("web_queue_overview"), {}).fetchall()
    counted_until = rows[0]["counted_until"] if rows else None
    return {"queues": rows, "counted_until": counted_until}


def process_types(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Per process type: its rules, quantity, standing API error, last scale events."""
    types: dict[str, dict[str, Any]] = scaling_status(conn)
    # queue -> (ready, running), from the small active partition
    load = {row[0]: (row[3], row[4]) for row in conn.execute(sql.query("metrics_current"), {})}
    result = []
    for name, entry in types.items():
        busy = [load[queue_name] for queue_name in entry["queues"] if queue_name in load]
        events = [
            _event(row)
            for row in conn.execute(
                sql.query("scale_events_recent"), {"process_type": name, "limit": 10}
            ).fetchall()
        ]
        result.append(
            {
                "name": name,
                **entry,
                "last_error": redact(entry["last_error"]),
                "ready": sum(ready for ready, _ in busy),
                "running": sum(running for _, running in busy),
                "events": events,
            }
        )
    return result


def _event(row: tuple[Any, ...]) -> dict[str, Any]:
    _id, at, _type, from_q, to_q, reason, actor, outcome, request_id, duration_ms = row
    return {
        "at": at,
        "from": from_q,
        "to": to_q,
        "reason": reason,
        "actor": actor,
        "outcome": redact(outcome),
        "request_id": request_id,
        "duration_ms": duration_ms,
    }


def jobs(
    conn: psycopg.Connection,
    *,
    queue_name: str | None = None,
    status: str | None = None,
    task: str | None = None,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> dict[str, Any]:
    """A page of jobs, newest first; `next_before` continues the list (None at its end)."""
    if status is not None and status not in queue.STATUSES:
        status = None
    params = {"queue": queue_name, "status": status, "task": task, "before": before}
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(sql.query("web_jobs_list"), {**params, "limit": limit + 1}, prepare=False)
        .fetchall()
    )
    for row in rows:
        row["last_error"] = redact(row["last_error"])
    more = len(rows) > limit
    rows = rows[:limit]
    return {"jobs": rows, "next_before": rows[-1]["id"] if more else None}


def job(conn: psycopg.Connection, job_id: int) -> dict[str, Any]:
    """One job with its timings (s); JobNotFound if it does not exist."""
    row = queue.get_job(conn, job_id)
    row["last_error"] = redact(row["last_error"])
    row["waited_s"] = _seconds(row["created_at"], row["started_at"] or row["finished_at"])
    row["ran_s"] = _seconds(row["started_at"], row["finished_at"])
    result = row.get("result")
    row["peak_rss_bytes"] = (
        result.get("worker_peak_rss_bytes") if isinstance(result, dict) else None
    )
    return row


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def reports(conn: psycopg.Connection, folder: Path, limit: int = 20) -> dict[str, Any]:
    """The catalog of the reports folder (each report's declared parameters, or why it is
    broken) and the most recent report runs with their figures."""
    entries: list[dict[str, Any]] = []
    for name in catalog.names(folder):
        try:
            found = catalog.load(folder, name)
        except InvalidReport as exc:
            entries.append({"name": name, "error": str(exc)})
            continue
        entries.append({"name": name, "description": found.description, "params": found.params})
    runs = (
        conn.cursor(row_factory=dict_row)
        .execute(sql.query("web_report_runs"), {"limit": limit})
        .fetchall()
    )
    for run in runs:
        result = run["result"] if isinstance(run["result"], dict) else {}
        run.update(
            rows=result.get("rows", (run["progress"] or {}).get("rows")),
            csv_bytes=result.get("csv_bytes"),
            duration_s=result.get("duration_s"),
            peak_rss_bytes=result.get("worker_peak_rss_bytes"),
            store=result.get("store"),
            last_error=redact(run["last_error"]),
        )
    return {"folder": str(folder), "reports": entries, "runs": runs}
