"""Connections to Postgres: connect, reconnect with backoff, LISTEN and draining notifications,
retrying a statement that lost a race.

LISTEN needs a direct connection (not through a transaction-mode pooler such as PgBouncer in
transaction mode): notifications and session advisory locks are bound to one server session.

pgdyno's own sessions (workers, dispatchers, the CLI, the report store) pin their search_path
to pg_catalog, pgdyno (then pg_temp): Postgres picks an operator or function whose argument
types match exactly over a built-in one that needs a cast or is polymorphic (the enum `=`),
wherever it is on the path, so with public on it a role allowed to CREATE there could make
pgdyno's statements run its code with pgdyno's privileges. Their JSON is decoded leniently:
a value Python cannot decode (args nested thousands deep, an integer of thousands of digits,
written before pgdyno bounded them) reads as {"_undecodable": why} instead of failing the
statement that reads it.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import set_json_loads

from pgdyno import backoff, sql
from pgdyno.config import unreadable_dsn
from pgdyno.errors import DatabaseUnavailable
from pgdyno.logfmt import log_event

if TYPE_CHECKING:  # psycopg >= 3.3 names the query types so
    from psycopg.abc import Params, QueryNoTemplate

log = logging.getLogger(__name__)

CHANNEL = "pgdyno_jobs"
#: Control messages ('cancel 42' to workers, 'schedules' to the dispatcher): see
#: drain_notifications.
CONTROL_CHANNEL = "pgdyno_control"
#: Put before a control payload by drain_notifications: Postgres payloads cannot hold NUL, so a
#: control message can never be taken for a queue name.
CONTROL_PREFIX = "\x00"

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

#: TCP keepalives on every connection pgdyno opens (unless the URL sets them): an idle
#: connection whose peer vanished (a dyno moved, a NAT entry dropped) fails after about
#: 15 + 5 x 3 = 30 s of silence instead of hanging, and data left unacknowledged for 30 s
#: closes it. A middlebox that answers the probes but forwards nothing is not caught by TCP:
#: the worker checks its LISTEN connection itself (pgdyno.worker.health).
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}


def _keepalives(dsn: str) -> dict[str, Any]:
    """The KEEPALIVES the URL does not set itself (none for a URL that does not parse: the
    connection attempt reports that)."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.Error:
        return {}
    return {key: value for key, value in KEEPALIVES.items() if key not in given}


def connect(
    dsn: str,
    *,
    application_name: str = "pgdyno",
    autocommit: bool = True,
    connect_timeout: int = 10,
    own_session: bool = True,
) -> psycopg.Connection:
    """A connection in autocommit mode (callers open transactions explicitly), with TCP
    keepalives (KEEPALIVES).

    `own_session`: pgdyno's own statements run on it: its search_path is pinned and its JSON
    decoded leniently (see the module's docstring). A report's query connection, whose SQL is
    the report author's, passes False. A DSN that cannot be read raises ConfigError without
    quoting it (it may hold the password); an unreachable server, DatabaseUnavailable.
    """
    try:
        conn = psycopg.connect(
            dsn,
            autocommit=autocommit,
            application_name=application_name,
            connect_timeout=connect_timeout,
            **_keepalives(dsn),
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to Postgres: {first_line(exc)}") from exc
    except psycopg.ProgrammingError as exc:  # libpq could not parse the DSN
        raise unreadable_dsn(exc) from None
    if own_session:
        try:
            pin_session(conn)
        except BaseException:
            conn.close()
            raise
    return conn


def pin_session(conn: psycopg.Connection) -> None:
    """Make `conn` one of pgdyno's own sessions: search_path pinned, lenient JSON."""
    conn.execute(sql.query("session_pin_search_path"))
    if not conn.autocommit:
        conn.commit()
    set_json_loads(_lenient_json, conn)


def _lenient_json(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        return {"_undecodable": f"{type(exc).__name__}: {first_line(exc)[:200]}"}


def scalar(conn: psycopg.Connection, query: QueryNoTemplate, params: Params | None = None) -> Any:
    """The first column of the statement's first row; LookupError when it returns no row."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise LookupError("the statement returned no row")
    return row[0]


def first_line(exc: BaseException) -> str:
    """The first line of a driver error, which never includes the password."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def listen(conn: psycopg.Connection, *channels: str) -> None:
    """LISTEN on `channels` (default: pgdyno_jobs), all in one round trip."""
    statements = [
        psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel))
        for channel in channels or (CHANNEL,)
    ]
    conn.execute(psycopg.sql.SQL("; ").join(statements))


@overload
def drain_notifications(conn: psycopg.Connection) -> list[str]: ...


@overload
def drain_notifications(
    conn: psycopg.Connection, *, with_channel: Literal[True]
) -> list[tuple[str, str]]: ...


def drain_notifications(
    conn: psycopg.Connection, *, with_channel: bool = False
) -> list[str] | list[tuple[str, str]]:
    """Payloads (or (channel, payload) pairs) of the notifications received on `conn`,
    without blocking.

    Includes those psycopg set aside while the connection ran queries; raises
    OperationalError when the connection is gone. Payloads of CONTROL_CHANNEL come with
    CONTROL_PREFIX before them; the others are queue names.
    """
    received = list(conn.notifies(timeout=0))
    if conn.closed or conn.pgconn.status != psycopg.pq.ConnStatus.OK:
        raise psycopg.OperationalError("LISTEN connection lost")
    if with_channel:
        return [(notify.channel, notify.payload) for notify in received]
    return [
        notify.payload if notify.channel != CONTROL_CHANNEL else CONTROL_PREFIX + notify.payload
        for notify in received
    ]


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


class Reconnect:
    """How a long-running loop (worker, dispatcher) gets its connection back.

    `connect()` calls `open_session` until it succeeds, with capped exponential backoff
    (`backoff.delay(failures, base, cap)`) before each try but the first after a working
    session, logging `db_unavailable` for each failure. Failures count across calls until the
    loop says a session `worked()`: a server that accepts connections and drops them at once
    is retried with growing pauses, not in a tight loop.
    """

    def __init__(
        self, *, base: float, cap: float, pause: Callable[[float], object], **log_fields: Any
    ) -> None:
        self.base, self.cap = base, cap
        self.failures = 0
        self._pause = pause
        self._fields = log_fields

    def connect(
        self, open_session: Callable[[], T], give_up: Callable[[], bool] = lambda: False
    ) -> T | None:
        """The opened session, or None when `give_up()` (asked before each try) says stop.

        `pause(seconds)` waits between tries (the loop's own wait, which stop() cuts short).
        """
        wait = self._delay() if self.failures else 0.0
        for attempt in itertools.count(1):
            if wait:
                self._pause(wait)
            if give_up():
                return None
            self.failures += 1
            try:
                return open_session()
            except (psycopg.OperationalError, DatabaseUnavailable) as exc:
                wait = self._delay()
                log_event(
                    log,
                    "db_unavailable",
                    logging.WARNING,
                    **self._fields,
                    attempt=attempt,
                    retry_in_s=round(wait, 2),
                    error=first_line(exc),
                )
        raise AssertionError("unreachable")

    def _delay(self) -> float:
        return backoff.delay(self.failures, self.base, self.cap)

    def worked(self) -> None:
        """The session did real work: the next lost connection is retried at once."""
        self.failures = 0

    def lost(self, exc: BaseException, *, back_off: bool = True, **fields: Any) -> None:
        """The session broke (`exc`): log `db_connection_lost`; with `back_off`, count it as a
        failure, so that the next try waits first."""
        log_event(
            log,
            "db_connection_lost",
            logging.WARNING,
            **self._fields,
            error=first_line(exc),
            **fields,
        )
        if back_off:
            self.failures += 1
