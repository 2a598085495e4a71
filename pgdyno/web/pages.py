"""What each dashboard page shows, read from Postgres. No Flask here: plain dicts in, out.

Statements come from pgdyno/sql/web.sql and from the library's own reads (the queue, the
scaling state, the workers registry, paused queues, schedules). Secrets never leave this
module: error texts that may quote a URL go through `redact`.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgdyno import db, queue, registry, sql
from pgdyno.errors import InvalidReport
from pgdyno.logfmt import redact_dsn
from pgdyno.reports import catalog
from pgdyno.scaling.state import scaling_status
from pgdyno.schedules import store
from pgdyno.web import sampler, summary

#: Jobs per page of the jobs list.
PAGE_SIZE = 50
#: Most running jobs the Process types page reads, and shows per worker.
RUNNING_READ = 1000
RUNNING_SHOWN = 10
_SECRET_WORDS = re.compile(r"((?:api[_-]?key|token|secret|password)\s*[=:]\s*)\S+", re.IGNORECASE)


def redact(text: str | None) -> str | None:
    """Text for a page: DSN passwords and `token=...`-like values replaced by ***."""
    if text is None:
        return None
    return _SECRET_WORDS.sub(r"\1***", redact_dsn(text))


def count_finished(conn: psycopg.Connection, read_only: bool) -> None:
    """Bring the finished-job counters up to date (a few seconds' window of the finished_at
    index), so the counts move even when no dispatcher is sampling. Not in read-only mode."""
    if not read_only:
        sampler.advance_counters(conn)


def queues(conn: psycopg.Connection) -> dict[str, Any]:
    """The queues summary.queues shows (those that matter, the deepest others; a paused queue
    is listed even without jobs), each with ready (due), scheduled, running, done, failed,
    cancelled, the oldest due ready job's age (s), throughput (finished jobs per minute over
    the last hour of samples), paused and paused_at; `other`: the rest summed (with `queues`,
    their number; `jobs`, their ready, scheduled and running jobs) or None; `counted_until`."""
    shown = summary.queues(conn)
    names = [row["queue"] for row in shown.queues]
    rates: dict[str, float] = dict(
        conn.execute(sql.query("web_queue_rates"), {"queues": names}).fetchall()
    )
    for row in shown.queues:
        row["per_minute"] = rates.get(row["queue"])
    other = shown.other and {**shown.other, "jobs": summary.jobs(shown.other)}
    counted_until = db.scalar(conn, sql.query("metrics_counted_until"))
    return {
        "queues": shown.queues,
        "other": other,
        "others_shown": summary.OTHERS_SHOWN,
        "counted_until": counted_until,
    }


def process_types(
    conn: psycopg.Connection, shown: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Per process type: its rules, quantity, standing API error, last scale events, and
    scaling_status's registry and Retry-After keys (workers: the live count, served_queues,
    unserved_queues, failures), with `hold_until` (datetime) and `hold_s` (seconds from now)
    while no formation API call may be made (not_before_cause: retry_after or backoff).
    `shown`: the queues of summary.queues when the caller has read them already."""
    types: dict[str, dict[str, Any]] = scaling_status(conn)
    now = datetime.now(UTC)
    # queue -> (ready, running); rule queues are among the queues that matter, always shown
    if shown is None:
        shown = summary.queues(conn, 0).queues
    load = {row["queue"]: (row["ready"], row["running"]) for row in shown}
    result = []
    for name, entry in types.items():
        busy = [load[queue_name] for queue_name in entry["queues"] if queue_name in load]
        events = [
            _event(row)
            for row in conn.execute(
                sql.query("scale_events_recent"), {"process_type": name, "limit": 10}
            ).fetchall()
        ]
        hold_until = _datetime(entry["not_before"])
        result.append(
            {
                "name": name,
                **entry,
                "hold_until": hold_until,
                "hold_s": (hold_until - now).total_seconds() if hold_until else None,
                "last_error": redact(entry["last_error"]),
                "last_error_at": _datetime(entry["last_error_at"]),
                "ready": sum(ready for ready, _ in busy),
                "running": sum(running for _, running in busy),
                "events": events,
            }
        )
    return result


def workers(conn: psycopg.Connection) -> dict[str | None, dict[str, Any]]:
    """The workers registry (registry.workers) by process type (None: workers that do not know
    theirs): {"workers": the live and lost workers, each with `heartbeat_age_s` and `jobs`
    (the running jobs it holds, at most RUNNING_SHOWN) and `jobs_more` (how many more),
    "stopped": how many stopped cleanly within the registry's hour}."""
    running: dict[str, list[dict[str, Any]]] = defaultdict(list)
    cur = conn.cursor(row_factory=dict_row)
    for row in cur.execute(sql.query("web_running_jobs"), {"limit": RUNNING_READ}).fetchall():
        running[row["worker"]].append(row)
    now = datetime.now(UTC)
    by_type: dict[str | None, dict[str, Any]] = defaultdict(lambda: {"workers": [], "stopped": 0})
    for worker in registry.workers(conn):
        group = by_type[worker["process_type"]]
        if worker["state"] == "stopped":
            group["stopped"] += 1
            continue
        jobs = running.get(worker["id"], [])
        worker.update(
            heartbeat_age_s=(now - worker["heartbeat_at"]).total_seconds(),
            jobs=jobs[:RUNNING_SHOWN],
            jobs_more=max(len(jobs) - RUNNING_SHOWN, 0),
        )
        group["workers"].append(worker)
    return dict(by_type)


def schedules(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every schedule (schedules.store) with `next_run` (None: paused, or a bad timing) and
    `next_in_s` (seconds from now; negative: due, not enqueued yet)."""
    now = datetime.now(UTC)
    result = []
    for entry in store.all_schedules(conn):
        next_run = entry.next_run(now)
        result.append(
            {
                **dataclasses.asdict(entry),
                "last_error": redact(entry.last_error),
                "next_run": next_run,
                "next_in_s": (next_run - now).total_seconds() if next_run else None,
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
    """One job (queue.get_job: every column) with its timings (s) and, for a report, the
    worker's peak memory from its result; JobNotFound if it does not exist."""
    row = queue.get_job(conn, job_id)
    row["last_error"] = redact(row["last_error"])
    row["waited_s"] = _seconds(row["created_at"], row["started_at"] or row["finished_at"])
    row["ran_s"] = _seconds(row["started_at"], row["finished_at"])
    result = row.get("result")
    row["worker_peak_rss_bytes"] = (
        result.get("worker_peak_rss_bytes") if isinstance(result, dict) else None
    )
    return row


def _datetime(iso: Any) -> datetime | None:
    """A time scaling_status gives as ISO 8601 text, back as a datetime."""
    return datetime.fromisoformat(iso) if iso else None


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
