"""The built-in `report` task's work (registered by reports/task.py): run a named report and
store its result, in flat memory.

    INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('reports', 'report',
        '{"name": "revenue_by_month", "params": {"since": "2026-01-01"}}');

The query runs in a read-only transaction with the report's settings; its parameters are
quoted as literals by the driver (COPY takes no bind parameters), and before it runs Postgres
plans it through the extended protocol, which proves it is a single statement. COPY streams
the CSV to a store without the result ever being held in memory.

What really keeps a report to reading is the role it runs as: PGDYNO_REPORTS_DATABASE_URL (a
follower, or a role with SELECT on the report tables only) when the operator sets it, else the
worker's own DATABASE_URL. A read-only transaction stops writes to tables, not functions with
side effects (pg_terminate_backend, lo_export, dblink_exec, pg_read_file): only a role without
the right to run them does. A report that took an advisory lock (any role may) fails: it could
have held up pgdyno's own locks or the app's.

Retrying cannot help a bad name, bad parameters or a query Postgres refuses (syntax, missing
table, data errors, a write): those raise InvalidReport and the job fails at once. A lost
connection, a busy upload server or a full disk raise ReportFailed and the job is retried.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql

from pgdyno import db, sql
from pgdyno.config import Settings
from pgdyno.errors import InvalidReport, ReportFailed
from pgdyno.logfmt import log_event
from pgdyno.reports import catalog
from pgdyno.reports import rss as memory
from pgdyno.reports.catalog import Report
from pgdyno.reports.fence import HttpAllow
from pgdyno.reports.store import open_store
from pgdyno.reports.stream import GzipStream, Progress

log = logging.getLogger(__name__)

# SQLSTATE classes where the same query fails the same way however often it runs: feature not
# supported, cardinality, data exception, integrity, read-only, routine exceptions (dblink
# refusing a connection without a password), invalid names, syntax or access, WITH CHECK,
# PL/pgSQL raise.
_PERMANENT_CLASSES = {"0A", "21", "22", "23", "25", "2B", "2F", "3D", "3F", "42", "44", "P0"}


def run(
    settings: Settings,
    *,
    job_id: int,
    database_url: str,
    name: Any,
    params: Any = None,
    store: Any = "postgres",
    url: Any = None,
    headers: Any = None,
    spool: Any = False,
    progress: Progress | None = None,
    on_cancel: Callable[[Callable[[], None]], None] | None = None,
) -> dict[str, Any]:
    """Run one report for job `job_id` and return what the job's result records.

    `on_cancel` registers what to do when the job's cancel is requested (JobContext.on_cancel):
    the runner then cancels its query on the server (ReportFailed follows). The query runs on
    settings.reports_database_url if set, else on `database_url` (the worker's), where the
    postgres store keeps the result either way.
    """
    started = time.monotonic()
    report = _load(settings, job_id, name)
    values = report.bind(params)
    store_args: dict[str, Any] = {
        "job_id": job_id,
        "report": report.name,
        "database_url": database_url,
        "output_dir": Path(settings.reports_output_dir),
        "url": url,
        "headers": headers,
        "spool": spool,
        "http_allow": _note_shared_hosts(HttpAllow.parse(settings.reports_http_allow)),
    }
    open_store(store, **store_args)  # refuses bad store arguments before connecting
    per_report = memory.reset_peak()
    query_url = settings.reports_database_url or database_url
    _note_role(settings)
    conn = db.connect(
        query_url,
        autocommit=False,
        application_name=f"pgdyno report {report.name} job {job_id}"[:63],
        own_session=False,  # the report author's SQL, on their search_path
    )
    conn.read_only = True  # every transaction on it starts with BEGIN READ ONLY
    cancelled = threading.Event()
    if on_cancel is not None:
        on_cancel(lambda: _cancel_query(conn, cancelled))
    # On the worker's database, the postgres store writes on this connection once the COPY is
    # over: one per report. A report that ran elsewhere is stored through a connection of its
    # own, opened once this one is closed.
    target = open_store(
        store, **store_args, connection=conn, shared_connection=query_url == database_url
    )
    log_event(log, "report_started", job=job_id, report=report.name, store=target.kind)
    stream: GzipStream | None = None
    try:
        statement = _prepare(conn, report, values)
        if cancelled.is_set():
            raise ReportFailed(f"report {report.name!r} was cancelled before its query ran")
        cursor = conn.cursor()
        blocks = _copy_blocks(cursor, statement, report.name)
        stream = GzipStream(blocks, progress=progress, final_rows=lambda: cursor.rowcount)
        try:
            stored = target.save(stream)
        except BaseException:
            if stream.error is not None:  # reading failed: that is the error to report
                raise stream.error from None
            raise
        finally:
            with contextlib.suppress(psycopg.Error):  # the connection may be gone already
                blocks.close()  # a COPY still running is cancelled, not read to the end
    except psycopg.Error as exc:
        raise failure(report.name, exc) from exc
    finally:
        conn.close()
    assert stream is not None
    duration = time.monotonic() - started
    result = {
        "report": report.name,
        "params": values,
        "store": target.kind,
        "location": stored.location,
        **stored.details,
        "rows": stream.rows,
        "csv_bytes": stream.csv_bytes,
        "stored_bytes": stream.stored_bytes,
        "duration_s": round(duration, 3),
        "worker_peak_rss_bytes": memory.peak_rss_bytes(),
        "peak_rss_scope": "report" if per_report else "process",
    }
    log_event(
        log,
        "report_stored",
        job=job_id,
        report=report.name,
        store=target.kind,
        rows=stream.rows,
        csv_bytes=stream.csv_bytes,
        stored_bytes=stream.stored_bytes,
        duration_ms=round(duration * 1000, 1),
        peak_rss_mib=round(result["worker_peak_rss_bytes"] / 2**20, 1),
    )
    return result


def _cancel_query(conn: psycopg.Connection, cancelled: threading.Event) -> None:
    """Cancel what the report's connection runs, on the server (as pg_cancel_backend would, but
    through the session's own cancel key: no privilege needed, and never another session that
    reused the backend's pid once this one has ended)."""
    cancelled.set()
    if not conn.closed:
        conn.cancel_safe(timeout=5.0)


def _load(settings: Settings, job_id: int, name: Any) -> Report:
    """The report, or InvalidReport with the message for the job's row (no folder path, no
    list of other reports: clients read it back); the full one goes to the log."""
    try:
        return catalog.load(Path(settings.reports_dir), name)
    except InvalidReport as exc:
        if exc.public != str(exc):
            log_event(log, "report_invalid", logging.WARNING, job=job_id, error=str(exc))
        raise InvalidReport(exc.public) from None


_role_noted = False


def _note_role(settings: Settings) -> None:
    """Say once per worker when reports run as the worker's own role (see the docstring)."""
    global _role_noted
    if settings.reports_database_url or _role_noted:
        return
    _role_noted = True
    log_event(
        log,
        "reports_run_as_worker_role",
        msg="reports run on DATABASE_URL: set PGDYNO_REPORTS_DATABASE_URL to a follower or a "
        "SELECT-only role so that a report can only read",
    )


_shared_noted: set[str] = set()


def _note_shared_hosts(allow: HttpAllow) -> HttpAllow:
    """Warn once per worker about each host entry of PGDYNO_REPORTS_HTTP_ALLOW that admits
    every bucket of a shared object store (fence.py); returns `allow`."""
    for entry in allow.shared_hosts:
        if entry not in _shared_noted:
            _shared_noted.add(entry)
            log_event(
                log,
                "reports_http_allow_shared_host",
                logging.WARNING,
                entry=entry,
                msg="this PGDYNO_REPORTS_HTTP_ALLOW entry admits every owner's buckets on a "
                "shared storage host: anyone who can enqueue may upload reports to a bucket of "
                "their own; list your bucket as a URL prefix instead "
                "(https://storage.googleapis.com/my-bucket/)",
            )
    return allow


def _prepare(conn: psycopg.Connection, report: Report, values: dict[str, Any]) -> pgsql.Composed:
    """Apply the report's settings, quote its parameters and check it only reads; returns the
    COPY statement to run."""
    # A report whose job process is killed (timeout, memory guard, cancel) must not leave its
    # query running on the server: the backend checks every second that the client is there.
    conn.execute(sql.query("report_check_client"))
    for setting, value in report.settings:
        conn.execute(sql.query("report_set_config"), {"name": setting, "value": value})
    # The driver quotes each value as a literal of its type: values never touch the SQL text.
    with psycopg.ClientCursor(conn) as quoting:
        text = pgsql.SQL(quoting.mogrify(report.sql, values))
    explain = pgsql.SQL(sql.query("report_explain")).format(query=text)
    # prepare=True: the extended protocol, which refuses a text of several statements.
    row = conn.execute(explain, prepare=True).fetchone()
    assert row is not None  # EXPLAIN always returns its plan
    plan = row[0]
    writes = _writes(plan)
    if writes:
        raise InvalidReport(
            f"report {report.name!r} is not read-only: its plan writes ({', '.join(writes)}); "
            "a report may only read"
        )
    return pgsql.SQL(sql.query("report_copy_out")).format(query=text)


def _writes(plan: Any) -> list[str]:
    """'Delete on orders' for each node of an EXPLAIN (FORMAT JSON) plan that modifies a table."""
    found: list[str] = []
    nodes = [entry["Plan"] for entry in plan] if isinstance(plan, list) else [plan]
    while nodes:
        node = nodes.pop()
        if node.get("Node Type") == "ModifyTable":
            found.append(f"{node.get('Operation', 'Write')} on {node.get('Relation Name', '?')}")
        nodes.extend(node.get("Plans", []))
    return found


def _copy_blocks(
    cursor: psycopg.Cursor, statement: pgsql.Composed, report: str
) -> Generator[memoryview, None, None]:
    """COPY's CSV, one row per block; cursor.rowcount holds COPY's row count once exhausted.

    Then, still in the report's transaction: InvalidReport if it took an advisory lock (the
    stream fails, so no store keeps the result)."""
    with cursor.copy(statement) as copy:
        yield from copy  # type: ignore[misc]
    if db.scalar(cursor.connection, sql.query("report_advisory_locks")):
        raise InvalidReport(
            f"report {report!r} took an advisory lock (pg_advisory_lock or the like): a report "
            "may only read, and a lock could hold up pgdyno or the app"
        )


def failure(report: str, exc: psycopg.Error) -> InvalidReport | ReportFailed:
    """The job error for a Postgres error: permanent when running it again cannot help."""
    state = exc.sqlstate or ""
    message = exc.diag.message_primary or db.first_line(exc)
    if exc.diag.message_hint:
        message += f" (hint: {exc.diag.message_hint})"
    if state == "25006":
        return InvalidReport(
            f"report {report!r} is not read-only: {message}; a report may only read"
        )
    if state == "57014" and "statement timeout" in message:
        return InvalidReport(
            f"report {report!r} ran out of time: {message}; give it more in its header, "
            "e.g. -- set: statement_timeout = 30min"
        )
    if state[:2] in _PERMANENT_CLASSES:
        return InvalidReport(f"report {report!r} failed in Postgres: {message} (SQLSTATE {state})")
    return ReportFailed(
        f"report {report!r} failed in Postgres: {message}"
        + (f" (SQLSTATE {state})" if state else "")
    )
