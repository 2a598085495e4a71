"""The worker's link to Postgres: its two connections, and the job statements it runs on them.

A worker holds one `Session`: the work connection runs every statement (claims, heartbeats,
outcomes, the idle callback's scaling decision); the listen connection only LISTENs, so a
long statement never delays a notification. The session checks that notifications still
arrive with a self-NOTIFY round trip (worker/health.py): a silent LISTEN connection raises
OperationalError from `notifications()`, and the loop reconnects. The loop talks to them
through two seams that its tests replace (tests/fakes.py): `JobQueue`, the job statements
(pgdyno.queue itself in production), and `SessionOpener`, which opens a session.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import psycopg

from pgdyno import db, queue, sleepers, sql
from pgdyno.logfmt import log_event
from pgdyno.migrate import require_migrated
from pgdyno.queue import Claimed, ClaimedJob, Finished
from pgdyno.worker.health import INTERVAL, MIN_TIMEOUT, ListenProbe

log = logging.getLogger(__name__)


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
        done: Sequence[Finished | tuple[int, str | None]] = (),
    ) -> Claimed | list[ClaimedJob]: ...

    def fail(
        self,
        conn: psycopg.Connection,
        *,
        worker: str,
        job_id: int,
        error: str,
        retry_in: float | None,
        attempt: int | None = None,
        peak_rss_bytes: int | None = None,
    ) -> str | None: ...

    def heartbeat(
        self,
        conn: psycopg.Connection,
        *,
        worker: str,
        ids: Sequence[int],
        lease: float,
        attempts: Sequence[int] | None = None,
    ) -> set[int]: ...

    def set_progress(
        self,
        conn: psycopg.Connection,
        *,
        worker: str,
        job_id: int,
        progress: Mapping[str, Any] | str,
        attempt: int | None = None,
    ) -> bool: ...

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

    # The sleepers registry (pgdyno/sleepers.py, re-exported by pgdyno.queue).
    def wait_for_jobs(
        self, conn: psycopg.Connection, *, holder: str, queues: Sequence[str], wait: float = ...
    ) -> bool: ...

    def stop_waiting(self, conn: psycopg.Connection) -> None: ...


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

    def wake_in(self) -> float | None:
        """Seconds until the session needs a turn of the loop (its LISTEN check); None: never."""
        ...

    def close(self) -> None: ...


#: Opens a session for (DSN, worker id); raises DatabaseUnavailable or OperationalError.
SessionOpener = Callable[[str, str], Session]


class PostgresSession:
    """The real session: two direct connections (LISTEN does not survive a pooler)."""

    def __init__(
        self, work: psycopg.Connection, listen: psycopg.Connection, probe: ListenProbe, worker: str
    ) -> None:
        self._work = work
        self._listen = listen
        self._probe = probe
        self._worker = worker

    @classmethod
    def open(cls, dsn: str, worker: str, check_every: float = INTERVAL) -> PostgresSession:
        """Connect both, set the work connection's session settings, LISTEN on the other;
        check the LISTEN connection every `check_every` seconds (worker/health.py).

        The two connections are opened at once: the listen connection connects and LISTENs
        in a thread of its own (`_Opening`) while this one connects the work connection,
        checks the schema, sets the session up and prunes the sleepers registry. Both are
        ready when it returns, so the worker's first claim, and its first registration as
        waiting, find the LISTEN in place. Raises what either raised (the work connection's
        error first: an unmigrated database is named as such), with both connections closed.
        """
        probe = ListenProbe(time.monotonic(), check_every, max(check_every, MIN_TIMEOUT))
        opening = _Opening(lambda: _open_listen(dsn, worker, probe.channel))
        try:
            work = db.connect(dsn, application_name=f"pgdyno worker {worker}")
        except BaseException:
            opening.abandon()
            raise
        try:
            require_migrated(work)  # before the release phase ran: the worker waits, retries
            queue.setup_worker_session(work)
            sleepers.prune(work)  # registrations of sessions gone (a killed worker's)
            listen = opening.result()
        except BaseException:
            opening.abandon()
            work.close()
            raise
        return cls(work, listen, probe, worker)

    @property
    def work(self) -> psycopg.Connection:
        return self._work

    def notifications(self) -> list[str]:
        """Queue names notified since the last call (control payloads behind
        db.CONTROL_PREFIX); also sends the LISTEN check's probe when
        due, and raises OperationalError when the last one never came back."""
        now = time.monotonic()
        payloads = []
        for channel, payload in db.drain_notifications(self._listen, with_channel=True):
            if channel == self._probe.channel:
                self._probe.arrived(payload, now)
            elif channel == db.CONTROL_CHANNEL:  # cancel requests: worker/cancels.py
                payloads.append(db.CONTROL_PREFIX + payload)
            else:
                payloads.append(payload)
        silent = self._probe.silent_for(now)
        if silent is not None:
            log_event(
                log,
                "listen_connection_dead",
                logging.WARNING,
                worker=self._worker,
                silent_s=round(silent, 1),
            )
            raise psycopg.OperationalError(
                f"the LISTEN connection is silent: a notification sent {silent:.0f} s ago never "
                "arrived (a stalled proxy or NAT?)"
            )
        token = self._probe.due(now)
        if token is not None:
            self._work.execute(
                sql.query("worker_listen_probe"), {"channel": self._probe.channel, "token": token}
            )
        return payloads

    def fds(self) -> list[int]:
        return [self._listen.pgconn.socket]

    def wake_in(self) -> float | None:
        return self._probe.wake_in(time.monotonic())

    def close(self) -> None:
        for conn in (self._work, self._listen):
            with contextlib.suppress(Exception):
                conn.close()


def _open_listen(dsn: str, worker: str, probe_channel: str) -> psycopg.Connection:
    """The listen connection, LISTENing."""
    listen = db.connect(dsn, application_name=f"pgdyno listen {worker}")
    try:
        # Jobs, the LISTEN check's channel, and cancel requests (worker/cancels.py).
        db.listen(listen, db.CHANNEL, probe_channel, db.CONTROL_CHANNEL)
    except BaseException:
        listen.close()
        raise
    return listen


class _Opening:
    """A connection being opened by `connect` in a thread of its own (started at once)."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._conn: psycopg.Connection | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(connect,), name="pgdyno-listen-open", daemon=True
        )
        self._thread.start()

    def _run(self, connect: Callable[[], psycopg.Connection]) -> None:
        try:
            self._conn = connect()
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> psycopg.Connection:
        """The open connection, once the thread is done; raises what `connect` raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._conn is None:
            raise AssertionError("the connection thread ended without a result")
        return self._conn

    def abandon(self) -> None:
        """Wait for the thread and close what it opened (the caller failed meanwhile); its
        error, if any, gives way to the caller's."""
        self._thread.join()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
