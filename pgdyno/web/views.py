"""The dashboard's routes: pages (each refreshes its live part by polling, through htmx),
the timeline's JSON, the actions (POST, CSRF-checked, refused in read-only mode: retry and
cancel a job, pause and resume a queue or a schedule), the CSV download and /metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from itertools import chain
from typing import Any

import psycopg
from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from prometheus_client.exposition import choose_encoder
from psycopg_pool import PoolTimeout
from werkzeug.wrappers import Response as WerkzeugResponse

from pgdyno import cancellation, db, pausing, queue
from pgdyno.errors import InvalidJob, InvalidJobState, JobNotFound, PgdynoError, ScheduleNotFound
from pgdyno.reports import results
from pgdyno.schedules import store
from pgdyno.web import auth, pages, prometheus, summary, timeline
from pgdyno.web.app import Database

blueprint = Blueprint("pgdyno", __name__)
_FILE_PART = re.compile(r"[^A-Za-z0-9_-]+")


def connection() -> AbstractContextManager[psycopg.Connection]:
    database: Database = current_app.extensions["pgdyno_db"]
    return database.connection()


def render(template: str, **context: Any) -> str:
    """A page; only its live part when htmx asks (the HX-Request header of a refresh)."""
    return render_template(
        template,
        partial=request.headers.get("HX-Request") == "true",
        read_only=current_app.config["PGDYNO_READ_ONLY"],
        database=current_app.config["PGDYNO_DATABASE_LABEL"],
        csrf_token=csrf_token,
        **context,
    )


def csrf_token() -> str:
    """This browser's CSRF token (a new one is set as a cookie with the response)."""
    token = request.cookies.get(auth.CSRF_COOKIE) or g.get("csrf_new")
    if not token:
        token = g.csrf_new = auth.new_csrf_token()
    return token


def refused_action() -> tuple[str, int] | None:
    """The answer to an action that may not run (read-only mode; a CSRF token or an origin
    that is not this dashboard's), or None."""
    if current_app.config["PGDYNO_READ_ONLY"]:
        return render("error.html", message="the dashboard is read-only"), 403
    if not auth.same_origin(dict(request.headers), request.host) or not auth.csrf_ok(
        request.cookies.get(auth.CSRF_COOKIE), request.form.get(auth.CSRF_FIELD)
    ):
        return render("error.html", message="refused: the form's CSRF token is not valid"), 403
    return None


@blueprint.errorhandler(psycopg.OperationalError)
@blueprint.errorhandler(PoolTimeout)
def database_down(exc: Exception) -> tuple[str, int]:
    return render("error.html", message=f"Postgres is unavailable: {db.first_line(exc)}"), 503


@blueprint.errorhandler(psycopg.errors.UndefinedTable)
@blueprint.errorhandler(psycopg.errors.UndefinedColumn)
@blueprint.errorhandler(psycopg.errors.UndefinedFunction)
def not_migrated(exc: Exception) -> tuple[str, int]:
    message = (
        "the database is not migrated for this version of pgdyno: run `pgdyno migrate` (on "
        f"Heroku, in the release phase: `release: pgdyno migrate`). {db.first_line(exc)}"
    )
    return render("error.html", message=message), 503


@blueprint.get("/")
def overview() -> str:
    with connection() as conn:
        pages.count_finished(conn, current_app.config["PGDYNO_READ_ONLY"])
        data = pages.queues(conn)
        types = pages.process_types(conn, data["queues"])
        schedules = pages.schedules(conn)
    return render(
        "overview.html",
        types=types,
        schedules=schedules,
        notice=request.args.get("notice"),
        subject=request.args.get("queue"),
        **data,
    )


@blueprint.post("/queues/<any(pause, resume):action>")
def queue_action(action: str) -> WerkzeugResponse | tuple[str, int]:
    """Pause or resume the queue named in the form (pgdyno/pausing.py)."""
    if refused := refused_action():
        return refused
    name = request.form.get("queue", "")
    with connection() as conn:
        if action == "pause":
            try:
                pausing.pause(conn, name)
            except InvalidJob as exc:
                return render("error.html", message=str(exc)), 400
            notice = "paused"
        else:
            notice = "resumed" if pausing.resume(conn, name) else "not_paused"
    return redirect(url_for("pgdyno.overview", notice=notice, queue=name), 303)


@blueprint.get("/types")
def process_types() -> str:
    with connection() as conn:
        types = pages.process_types(conn)
        workers = pages.workers(conn)
    return render("types.html", types=types, workers=workers)


@blueprint.get("/schedules")
def schedules() -> str:
    with connection() as conn:
        rows = pages.schedules(conn)
    return render(
        "schedules.html",
        schedules=rows,
        notice=request.args.get("notice"),
        subject=request.args.get("name"),
    )


@blueprint.post("/schedules/<any(pause, resume):action>")
def schedule_action(action: str) -> WerkzeugResponse | tuple[str, int]:
    """Pause or resume the schedule named in the form (schedules/store.py)."""
    if refused := refused_action():
        return refused
    name = request.form.get("name", "")
    try:
        with connection() as conn:
            store.set_paused(conn, name, action == "pause")
    except ScheduleNotFound as exc:
        return render("error.html", message=str(exc)), 404
    return redirect(url_for("pgdyno.schedules", notice=f"{action}d", name=name), 303)


@blueprint.get("/timeline")
def timeline_page() -> str:
    range_name = request.args.get("range", "hour")
    if range_name not in timeline.RANGES:
        range_name = "hour"
    return render("timeline.html", range=range_name, ranges=list(timeline.RANGES))


@blueprint.get("/timeline.json")
def timeline_data() -> Response:
    with connection() as conn:
        return jsonify(timeline.series(conn, request.args.get("range", "hour")))


@blueprint.get("/jobs")
def jobs() -> str:
    filters = {
        "queue_name": request.args.get("queue") or None,
        "status": request.args.get("status") or None,
        "task": request.args.get("task") or None,
    }
    before = request.args.get("before", type=int)
    with connection() as conn:
        data = pages.jobs(
            conn,
            queue_name=filters["queue_name"],
            status=filters["status"],
            task=filters["task"],
            before=before,
        )
        known = [row["queue"] for row in summary.queues(conn).queues]
    return render("jobs.html", filters=filters, statuses=queue.STATUSES, known_queues=known, **data)


@blueprint.get("/jobs/<int:job_id>")
def job(job_id: int) -> str | tuple[str, int]:
    try:
        with connection() as conn:
            row = pages.job(conn, job_id)
    except JobNotFound as exc:
        return render("error.html", message=str(exc)), 404
    return render("job.html", job=row, notice=request.args.get("notice"))


@blueprint.post("/jobs/<int:job_id>/<any(retry, cancel):action>")
def job_action(job_id: int, action: str) -> WerkzeugResponse | tuple[str, int]:
    """Retry a failed or cancelled job; cancel a job (pgdyno.cancel: a ready one is cancelled,
    a running one gets a cancel request its worker acts on). The notice says which."""
    if refused := refused_action():
        return refused
    try:
        with connection() as conn:
            if action == "retry":
                queue.retry_job(conn, job_id)
                notice: str = "retried"
            else:
                notice = cancellation.cancel(conn, job_id)
    except JobNotFound as exc:
        return render("error.html", message=str(exc)), 404
    except InvalidJobState:
        notice = f"{action}_refused"
    return redirect(url_for("pgdyno.job", job_id=job_id, notice=notice), 303)


@blueprint.get("/reports")
def reports() -> str:
    with connection() as conn:
        data = pages.reports(conn, current_app.config["PGDYNO_REPORTS_DIR"])
    return render("reports.html", **data)


@blueprint.get("/reports/<int:job_id>.csv")
def report_csv(job_id: int) -> Response | tuple[str, int]:
    """The report's CSV, streamed from the stored chunks on a connection of its own (never
    the whole result in memory)."""
    conn = db.connect(current_app.extensions["pgdyno_db"].url, application_name="pgdyno web")
    try:
        job_row = results.report_job(conn, job_id)
        pieces = results.csv_pieces(conn, job_row)
        first = next(pieces, b"")
    except PgdynoError as exc:
        conn.close()
        return render("error.html", message=str(exc)), 404 if isinstance(exc, JobNotFound) else 409
    except BaseException:
        conn.close()
        raise

    def stream() -> Iterator[bytes]:
        try:
            yield from chain([first], pieces)
        finally:
            conn.close()

    name = _FILE_PART.sub("_", str((job_row.get("args") or {}).get("name") or "report"))[:80]
    return Response(
        stream(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}-{job_id}.csv"'},
    )


@blueprint.get("/metrics")
def metrics() -> Response:
    """Prometheus text format (or OpenMetrics when the scraper asks for it)."""
    encoder, content_type = choose_encoder(request.headers.get("Accept") or "")
    with connection() as conn:
        pages.count_finished(conn, current_app.config["PGDYNO_READ_ONLY"])
    body = encoder(prometheus.registry(connection))
    return Response(body, headers={"Content-Type": content_type})
