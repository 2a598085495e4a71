"""The dashboard's Flask application: `create_app(...)` and `app_from_env()`.

Flask (routing, Jinja2 templates with autoescaping) on a small psycopg pool. Pages and actions
are in views.py; this module wires the database, authentication, CSRF and the security
headers (a Content-Security-Policy that allows only the package's own scripts and styles).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from flask import Flask, Response, current_app, g, request
from psycopg_pool import ConnectionPool

from pgdyno import db, sql
from pgdyno.config import Settings, check_dsn
from pgdyno.errors import ConfigError
from pgdyno.logfmt import redact_dsn
from pgdyno.web import auth

#: Longest a dashboard statement may run: a page never holds the database for long.
STATEMENT_TIMEOUT = "5s"
POOL_MAX = 4
#: What a page shows for a missing value.
NONE = "\u2013"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class Database:
    """A lazily opened pool of autocommit connections (read-only sessions in read-only mode)."""

    def __init__(self, url: str, read_only: bool) -> None:
        self.url = url
        self.read_only = read_only
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def _configure(self, conn: psycopg.Connection) -> None:
        db.pin_session(conn)  # one of pgdyno's own sessions (search_path, lenient JSON)
        conn.execute(
            sql.query("web_session_setup"),
            {"timeout": STATEMENT_TIMEOUT, "read_only": "on" if self.read_only else "off"},
        )

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=POOL_MAX,
                    kwargs={"autocommit": True, "application_name": "pgdyno web"},
                    configure=self._configure,
                    open=True,
                    timeout=10,
                    name="pgdyno-web",
                )
        with self._pool.connection() as conn:
            yield conn

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def create_app(
    database_url: str,
    *,
    credentials: auth.Credentials | None = None,
    read_only: bool = False,
    reports_dir: str | Path = "reports",
    allow_anonymous: bool = True,
) -> Flask:
    """The dashboard as a WSGI application.

    `credentials` protect every route (HTTP Basic password and/or bearer token); without one,
    `allow_anonymous` must be True (the caller serves on loopback only, or mounts the app
    behind its own authentication), else ConfigError. `read_only` hides and refuses the
    actions and opens read-only database sessions. `reports_dir` is the reports folder whose
    catalog the Reports page shows.
    """
    credentials = credentials or auth.Credentials()
    if not credentials.required and not allow_anonymous:
        raise ConfigError(
            "the dashboard needs a credential: set PGDYNO_WEB_PASSWORD (HTTP Basic) or "
            "PGDYNO_WEB_TOKEN (bearer)"
        )
    database_url = check_dsn(database_url)  # never quoted by the pool's own error logs
    app = Flask(__name__)
    app.config.update(
        PGDYNO_READ_ONLY=read_only,
        PGDYNO_REPORTS_DIR=Path(reports_dir),
        PGDYNO_DATABASE_LABEL=_database_label(database_url),
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.extensions["pgdyno_db"] = Database(database_url, read_only)
    app.extensions["pgdyno_credentials"] = credentials

    from pgdyno.web import views

    app.register_blueprint(views.blueprint)
    app.jinja_env.filters.update(ago=_ago, when=_when, size=_size, number=_number, period=_period)
    app.before_request(_authenticate)
    app.after_request(_headers)
    return app


def app_from_env(environ: Mapping[str, str] | None = None) -> Flask:
    """The app a web dyno serves (`gunicorn pgdyno.web:app`): DATABASE_URL, a credential
    (PGDYNO_WEB_PASSWORD or PGDYNO_WEB_TOKEN, required), PGDYNO_WEB_READ_ONLY=1,
    PGDYNO_REPORTS_DIR."""
    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    return create_app(
        settings.require_database_url(),
        credentials=auth.Credentials.from_env(env),
        read_only=env.get("PGDYNO_WEB_READ_ONLY", "").lower() in ("1", "true", "on", "yes"),
        reports_dir=settings.reports_dir,
        allow_anonymous=False,
    )


def _database_label(url: str) -> str:
    """host/dbname for the footer, never a password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return redact_dsn(url)
    host = str(info.get("host") or "local socket").split(",")[0]
    if host.startswith("/"):
        host = "local socket"
    return f"{host}/{info.get('dbname', '')}"


def _authenticate() -> Response | None:
    credentials: auth.Credentials = current_app.extensions["pgdyno_credentials"]
    if credentials.accepts(request.headers.get("Authorization")):
        return None
    return Response(
        "authentication required\n",
        401,
        {"WWW-Authenticate": 'Basic realm="pgdyno", charset="UTF-8"'},
        mimetype="text/plain",
    )


def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    token = g.get("csrf_new")
    if token:
        response.set_cookie(
            auth.CSRF_COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,
            path="/",
        )
    return response


# --- template filters ----------------------------------------------------------------------


def _ago(seconds: float | None) -> str:
    """3.2 -> '3.2 s', 125 -> '2 min 5 s', 7300 -> '2 h 1 min'."""
    if seconds is None:
        return NONE
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def _period(seconds: float | None) -> str:
    """A schedule's period: 900 -> '15 min', 5400 -> '1 h 30 min', 2 -> '2 s', 86400 -> '1 d'."""
    if seconds is None:
        return NONE
    rest = float(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{int(count)} {unit}")
    if rest or not parts:
        parts.append(f"{rest:g} s")
    return " ".join(parts)


def _when(value: datetime | None) -> str:
    if value is None:
        return NONE
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(count: Any) -> str:
    if count is None:
        return NONE
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} B"


def _number(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"
