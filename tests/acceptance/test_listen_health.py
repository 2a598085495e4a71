"""A silently dead LISTEN connection is noticed and replaced (issue 11, scenario 5).

The worker reaches Postgres through a proxy (tests/tcp_proxy.py) that stops forwarding the
worker's LISTEN connection while keeping both sockets open, as a stalled NAT does: TCP sees
nothing wrong. The worker's self-NOTIFY check must notice, log it and reconnect, so that a job
enqueued afterwards runs on its notification, long before the next poll (60 s here).
"""

from __future__ import annotations

import signal
import time

from helpers import log_fields, wait_for_listeners, wait_for_status, wait_until, worker
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from tcp_proxy import StallingProxy

import pgdyno


def _listen_backend(conn, besides: int = 0) -> tuple[int, int] | None:
    """(pid, client port) of the worker's LISTEN connection, as the server sees it (not the
    backend `besides`: the stalled one lives on, the proxy keeps its socket open)."""
    row = conn.execute(
        "SELECT pid, client_port FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'pgdyno listen %%' AND query LIKE 'LISTEN%%pgdyno_probe_%%'"
        " AND pid <> %s",
        (besides,),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def test_stalled_listen_connection_is_detected_and_replaced(effects, database_url):
    params = conninfo_to_dict(database_url)
    with StallingProxy((str(params["host"]), int(params["port"]))) as proxy:
        through_proxy = make_conninfo(database_url, host="127.0.0.1", port=proxy.port)
        extra = ["--lease", "3s", "--poll-interval", "60s"]
        with worker(through_proxy, "q", extra=extra) as proc:
            wait_for_listeners(effects, 1)
            pid, port = wait_until(lambda: _listen_backend(effects), message="the LISTEN backend")
            assert proxy.stall(port)
            stalled_at = time.monotonic()
            wait_until(
                lambda: log_fields(proc.output(), "listen_connection_dead"),
                timeout=30,
                message="the worker to notice its silent LISTEN connection",
            )
            detected_after = time.monotonic() - stalled_at
            wait_until(lambda: _listen_backend(effects, pid), message="a new LISTEN connection")
            enqueued_at = time.monotonic()
            job_id = pgdyno.enqueue(effects, "noop", queue="q")
            wait_for_status(effects, job_id, "done", timeout=10)  # a notification, not the poll
            ran_after = time.monotonic() - enqueued_at
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0
            output = proc.output()
    assert detected_after < 30
    assert ran_after < 10
    assert "at=warn event=listen_connection_dead" in output
    assert log_fields(output, "db_connection_lost")
