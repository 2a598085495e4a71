"""Connections to Postgres: the work connection, the LISTEN connection, reconnect with backoff.

LISTEN needs a direct connection (not through a transaction-mode pooler such as PgBouncer in
transaction mode): notifications and session advisory locks are bound to one server session.
"""

from __future__ import annotations

import logging
import selectors
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg.rows import dict_row

from pgdyno import backoff
from pgdyno.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

CHANNEL = "pgdyno_jobs"

#: Errors of a statement that lost a race with another session (SQLSTATE class 40): a job
#: moved to the finished partition under a concurrent claim or cancel ("tuple to be locked was
#: already moved to another partition"), a deadlock. Nothing happened and the connection is
#: fine: run the statement again. psycopg does not derive them all from TransactionRollback.
CONFLICTS = (
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.TransactionRollback,
)
T = TypeVar("T")


def connect(
    dsn: str,
    *,
    application_name: str = "pgdyno",
    autocommit: bool = True,
    dict_rows: bool = False,
    connect_timeout: int = 10,
) -> psycopg.Connection:
    """A connection in autocommit mode (callers open transactions explicitly)."""
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            application_name=application_name,
            connect_timeout=connect_timeout,
            row_factory=dict_row if dict_rows else psycopg.rows.tuple_row,
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to Postgres: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    """The first line of a driver error, which never includes the password."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def listen(conn: psycopg.Connection, channel: str = CHANNEL) -> None:
    conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))


def drain_notifications(conn: psycopg.Connection) -> list[str]:
    """Payloads of the notifications received on `conn`, without blocking.

    Includes those psycopg set aside while the connection ran queries; raises
    OperationalError when the connection is gone.
    """
    payloads = [notify.payload for notify in conn.notifies(timeout=0)]
    if conn.closed or conn.pgconn.status != psycopg.pq.ConnStatus.OK:
        raise psycopg.OperationalError("LISTEN connection lost")
    return payloads


def wait_readable(fds: list[int], timeout: float) -> list[int]:
    """Block until one of `fds` is readable or `timeout` seconds pass; no busy loop."""
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        return [key.fd for key, _ in selector.select(max(timeout, 0))]


def retry_on_conflict(action: Callable[[], T], attempts: int = 5) -> T:
    """Run `action`, again after a short pause when it loses a race (CONFLICTS)."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except CONFLICTS:
            if attempt == attempts:
                raise
            time.sleep(backoff.delay(attempt, 0.01, 0.5))
    raise AssertionError("unreachable")
