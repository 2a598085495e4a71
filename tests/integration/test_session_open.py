"""Opening a worker's session (worker/session.py): the work and listen connections are opened
at once, and both are ready, LISTEN included, when `PostgresSession.open` returns."""

from __future__ import annotations

import select
import threading
import time

import psycopg
import pytest
from helpers import wait_until

from pgdyno import db
from pgdyno.errors import SchemaNotMigrated
from pgdyno.worker import session as session_module
from pgdyno.worker.session import PostgresSession


def _backends(conn: psycopg.Connection, worker: str) -> list[str]:
    rows = conn.execute(
        "SELECT application_name FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND application_name LIKE %s"
        " ORDER BY application_name",
        (f"pgdyno % {worker}",),
    ).fetchall()
    return [row[0] for row in rows]


def _wait_for_notifications(opened: PostgresSession, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        payloads = opened.notifications()
        if payloads:
            return payloads
        select.select(opened.fds(), [], [], max(0.0, deadline - time.monotonic()))
    raise AssertionError("no notification reached the listen connection")


def test_both_connections_are_ready_when_open_returns_listen_included(conn, database_url):
    stale = 2_000_000_000  # a pid no session has: a killed worker's registration
    conn.execute(
        "INSERT INTO pgdyno.sleepers (queue, pid, holder) VALUES ('q', %s, 'gone')", (stale,)
    )
    opened = PostgresSession.open(database_url, "w-ready")
    try:
        assert _backends(conn, "w-ready") == ["pgdyno listen w-ready", "pgdyno worker w-ready"]
        work = opened.work
        assert work.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)
        assert work.execute("SHOW search_path").fetchone() == ("pg_catalog, pgdyno, pg_temp",)
        assert conn.execute(
            "SELECT count(*) FROM pgdyno.sleepers WHERE pid = %s", (stale,)
        ).fetchone() == (0,)  # pruned before the first claim
        # Listening already: a notification sent right after open() reaches the session.
        conn.execute("SELECT pg_notify('pgdyno_jobs', 'q')")
        assert _wait_for_notifications(opened) == ["q"]
    finally:
        opened.close()


def test_the_listen_connection_opens_while_the_work_connection_does(monkeypatch, database_url):
    """The work connection cannot connect until the listen connection has begun to: opened
    one after the other, as before, this open() would time out."""
    listen_started = threading.Event()
    connect = db.connect

    def connect_in_turn(dsn: str, **kwargs: object) -> psycopg.Connection:
        name = str(kwargs.get("application_name", ""))
        if name.startswith("pgdyno listen"):
            listen_started.set()
        elif name.startswith("pgdyno worker") and not listen_started.wait(5):
            raise AssertionError("the listen connection was not being opened meanwhile")
        return connect(dsn, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(db, "connect", connect_in_turn)
    opened = session_module.PostgresSession.open(database_url, "w-concurrent")
    try:
        assert listen_started.is_set()
        opened.work.execute("SELECT pg_notify('pgdyno_jobs', 'q')")
        assert _wait_for_notifications(opened) == ["q"]
    finally:
        opened.close()


def test_an_unmigrated_database_is_named_as_such_and_no_connection_stays_open(empty_url):
    with pytest.raises(SchemaNotMigrated, match="run `pgdyno migrate`"):
        PostgresSession.open(empty_url, "w-unmigrated")
    with psycopg.connect(empty_url, autocommit=True) as observer:
        # A closed connection's backend exits just after.
        wait_until(lambda: not _backends(observer, "w-unmigrated"), message="both closed")


def test_an_error_of_the_listen_connection_is_raised_and_the_work_connection_closed(
    monkeypatch, conn, database_url
):
    connect = db.connect

    def listen_fails(dsn: str, **kwargs: object) -> psycopg.Connection:
        if str(kwargs.get("application_name", "")).startswith("pgdyno listen"):
            raise psycopg.OperationalError("the listen connection was refused")
        return connect(dsn, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(db, "connect", listen_fails)
    with pytest.raises(psycopg.OperationalError, match="listen connection was refused"):
        PostgresSession.open(database_url, "w-listen-fails")
    wait_until(lambda: not _backends(conn, "w-listen-fails"), message="the work one closed")


def test_the_listen_connection_is_closed_when_the_work_connection_fails(
    monkeypatch, conn, database_url
):
    def check_fails(work: psycopg.Connection) -> None:
        raise psycopg.OperationalError("the schema check failed")

    monkeypatch.setattr(session_module, "require_migrated", check_fails)
    with pytest.raises(psycopg.OperationalError, match="schema check failed"):
        PostgresSession.open(database_url, "w-work-fails")
    wait_until(lambda: not _backends(conn, "w-work-fails"), message="the listen one closed")
