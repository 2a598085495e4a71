"""Waiting for a job's outcome: `pgdyno.result(conn, job_id, timeout=None)`, `pgdyno jobs wait`.

The waiter LISTENs on `pgdyno_finished` and marks the job `awaited`; the job's move to the
finished partition then sends `NOTIFY pgdyno_finished, '<id>'` (a trigger of migration 0010).
Jobs nobody waits for notify nothing, so workers pay one boolean test per finished job. A look
every FALLBACK_POLL_S seconds covers what a notification cannot (a job pruned meanwhile).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from pgdyno import db, sql
from pgdyno.db import listen, retry_on_conflict
from pgdyno.enqueue import _resolve_conn
from pgdyno.errors import (
    ConfigError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    PgdynoError,
    ResultTimeout,
)

CHANNEL = "pgdyno_finished"
#: Seconds between two looks at the job when no notification came.
FALLBACK_POLL_S = 10.0


def result(conn: psycopg.Connection | str | None, job_id: int, timeout: float | None = None) -> Any:
    """Wait until job `job_id` has finished and return its result (what the task returned, as
    JSON values; None when it returned nothing).

    `conn`: a connection (outside any open transaction: the job's enqueue must have committed,
    and a transaction would never see it finish), a database URL, or None for $DATABASE_URL.
    `timeout`: seconds, None to wait for as long as it takes.
    Raises JobFailed or JobCancelled (the stored error in `.error`), ResultTimeout (a
    TimeoutError) when `timeout` passes first, JobNotFound for an unknown id, ConfigError for a
    role that may not read jobs (an enqueue role).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    connection, owned = _resolve_conn(conn)
    try:
        with _listening(connection):
            retry_on_conflict(
                lambda: connection.execute(sql.query("job_mark_awaited"), {"id": job_id})
            )
            while True:
                status, value, error = _outcome(connection, job_id)
                if status == "done":
                    return value
                if status == "failed":
                    raise JobFailed(job_id, error)
                if status == "cancelled":
                    raise JobCancelled(job_id, error)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ResultTimeout(
                        f"job {job_id} is still {status} after {timeout:g}s of waiting"
                    )
                wait = FALLBACK_POLL_S if remaining is None else min(remaining, FALLBACK_POLL_S)
                for notify in connection.notifies(timeout=wait):
                    if notify.channel == CHANNEL and notify.payload == str(job_id):
                        break
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(
            f"pgdyno.result cannot read job {job_id}: {db.first_line(exc)}; it marks the job "
            "awaited and reads its result, which an enqueue role (pgdyno grant-enqueue) may "
            "not: wait for results with pgdyno's own role (the one that ran pgdyno migrate)"
        ) from None
    finally:
        if owned:
            connection.close()


def _outcome(conn: psycopg.Connection, job_id: int) -> tuple[str, Any, str | None]:
    row = conn.execute(sql.query("job_outcome"), {"id": job_id}).fetchone()
    if row is None:
        raise JobNotFound(f"no job with id {job_id} (finished jobs are removed by `pgdyno prune`)")
    return row[0], row[1], row[2]


@contextlib.contextmanager
def _listening(conn: psycopg.Connection) -> Iterator[None]:
    """LISTEN for the time of the wait, in autocommit (a notification is delivered between
    transactions only); the connection's own mode is put back afterwards."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise PgdynoError(
            "pgdyno.result() cannot wait inside an open transaction: the job would never be "
            "seen to finish (and, enqueued in it, never start); commit first"
        )
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        listen(conn, CHANNEL)
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.query("result_unlisten"))
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.autocommit = autocommit
