"""The worker's link to Postgres: its two connections, and the job statements it runs on them.

A worker holds one `Session`: the work connection runs every statement (claims, heartbeats,
outcomes, the idle callback's scaling decision); the listen connection only LISTENs, so a
long statement never delays a notification. The loop talks to them through two seams that
its tests replace (tests/fakes.py): `JobQueue`, the job statements (pgdyno.queue itself in
production), and `SessionOpener`, which opens a session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import psycopg

from pgdyno import db, queue
from pgdyno.migrate import require_migrated
from pgdyno.queue import ClaimedJob


class JobQueue(Protocol):
    """The job statements the worker loop runs; the module pgdyno.queue is the real one."""

    def complete_and_claim(
        self,
        conn: psycopg.Connection,
        *,
        worker: str,
        queues: Sequence[str],
        limit: int,
        lease: float,
        done: Sequence[tuple[int, str | None]] = (),
    ) -> list[ClaimedJob]: ...

    def fail(
        self,
        conn: psycopg.Connection,
        *,
        worker: str,
        job_id: int,
        error: str,
        retry_in: float | None,
    ) -> str | None: ...

    def heartbeat(
        self, conn: psycopg.Connection, *, worker: str, ids: Sequence[int], lease: float
    ) -> set[int]: ...

    def set_progress(
        self, conn: psycopg.Connection, *, worker: str, job_id: int, progress: Mapping[str, Any]
    ) -> None: ...

    def release(
        self,
        conn: psycopg.Connection,
        *,
        worker: str,
        ids: Sequence[int] | None,
        keep: Sequence[int] = (),
    ) -> list[int]: ...

    def rescue_expired(self, conn: psycopg.Connection) -> list[dict[str, Any]]: ...

    def next_due_in(self, conn: psycopg.Connection, queues: Sequence[str]) -> float | None: ...


class Session(Protocol):
    """An open session: `work` for statements, notifications and sockets to wait on."""

    @property
    def work(self) -> psycopg.Connection: ...

    def notifications(self) -> list[str]:
        """Payloads received since the last call (queue names); raises OperationalError when
        the listen connection is gone."""
        ...

    def fds(self) -> list[int]:
        """File descriptors that become readable when a notification arrives."""
        ...

    def close(self) -> None: ...


#: Opens a session for (DSN, worker id); raises DatabaseUnavailable or OperationalError.
SessionOpener = Callable[[str, str], Session]


class PostgresSession:
    """The real session: two direct connections (LISTEN does not survive a pooler)."""

    def __init__(self, work: psycopg.Connection, listen: psycopg.Connection) -> None:
        self._work = work
        self._listen = listen

    @classmethod
    def open(cls, dsn: str, worker: str) -> PostgresSession:
        """Connect both, set the work connection's session settings, LISTEN on the other."""
        work = db.connect(dsn, application_name=f"pgdyno worker {worker}")
        try:
            require_migrated(work)  # before the release phase ran: the worker waits, retries
            queue.setup_worker_session(work)
            listen = db.connect(dsn, application_name=f"pgdyno listen {worker}")
        except BaseException:
            work.close()
            raise
        try:
            db.listen(listen)
            db.listen(listen, db.CONTROL_CHANNEL)  # cancel requests (pgdyno/worker/cancels.py)
        except BaseException:
            work.close()
            listen.close()
            raise
        return cls(work, listen)

    @property
    def work(self) -> psycopg.Connection:
        return self._work

    def notifications(self) -> list[str]:
        return db.drain_notifications(self._listen)

    def fds(self) -> list[int]:
        return [self._listen.pgconn.socket]

    def close(self) -> None:
        for conn in (self._work, self._listen):
            with contextlib.suppress(Exception):
                conn.close()
