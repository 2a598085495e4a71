"""Cancelling running jobs, on the worker's side: learn of a request, tell the task, finish the
job as cancelled.

`pgdyno jobs cancel ID` (pgdyno/cancellation.py) sets the job's cancel_requested_at and sends
`NOTIFY pgdyno_control, 'cancel <id>'`. The worker's loop hands that notification (and each of
its polls, the safety net) to its `CancelWatch`, which asks the database which of the jobs it
runs have a request, then for each new one:

- sets the flag a task reads as `pgdyno.current_job().cancel_requested`;
- calls what the task registered with `current_job().on_cancel(callback)`, on the loop's thread
  (the report task cancels its query on the server there);
- once the job's outcome arrives, turns it into a non-retryable `JobCancelled` failure: the
  database then finishes it `cancelled` (job_fail honours the request, never retries it).

A thread cannot be stopped: a task that ignores the request for CANCEL_GRACE_S is logged
(`cancel_ignored`) and `on_overdue(job_id)` is called, the entry point for a pool that can stop
the job. The worker's loop passes grace 0 with the process pool (a job process cannot read the
flags, which live in the worker's process): its process is killed at once, and a report's query
stops on the server within a second (client_connection_check_interval, reports/runner.py).

The flags live in this module, per (worker id, job id), so that `current_job()` reads them
without the executor knowing the loop.

A thread-pool attempt past its timeout is asked to stop the same way (worker/abandoned.py:
`time_out`, from the executor thread that abandons it), per (worker id, job id, attempt): the
flag stays up until its thread returns (`returned`), whatever becomes of the job meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING

import psycopg

from pgdyno import db, sql
from pgdyno.logfmt import log_event

if TYPE_CHECKING:
    from pgdyno.worker.executor import Outcome

log = logging.getLogger(__name__)

#: Seconds a task may go on after its cancel was requested before `on_overdue` is called.
CANCEL_GRACE_S = 10.0
#: The payload prefix of a cancel request on the control channel ('cancel 42').
CANCEL_PAYLOAD = "cancel "

#: (connection, worker id, running job ids) -> the ids with a cancel request.
RequestedQuery = Callable[[psycopg.Connection, str, Sequence[int]], set[int]]


def requested_in_db(conn: psycopg.Connection, worker: str, ids: Sequence[int]) -> set[int]:
    """The jobs among `ids` (running, held by `worker`) whose cancel was requested."""
    rows = conn.execute(
        sql.query("jobs_cancel_requested"), {"ids": list(ids), "worker": worker}
    ).fetchall()
    return {row[0] for row in rows}


# --- the flags a running task reads -----------------------------------------------------------

_lock = threading.Lock()
_requested: set[tuple[str, int]] = set()
_callbacks: dict[tuple[str, int], list[Callable[[], None]]] = {}
#: Attempts past their timeout whose thread still runs: (worker id, job id, attempt).
_timed_out: set[tuple[str, int, int]] = set()


def is_requested(worker: str, job_id: int, attempt: int | None = None) -> bool:
    """Whether the cancel of job `job_id`, run by `worker`, was requested, or (given its
    `attempt`) that attempt ran past its timeout in the thread pool."""
    return (worker, job_id) in _requested or (worker, job_id, attempt) in _timed_out


def on_cancel(
    worker: str, job_id: int, callback: Callable[[], None], attempt: int | None = None
) -> None:
    """Call `callback` when the job's cancel is requested or `attempt` times out (at once if it
    already did)."""
    with _lock:
        if not is_requested(worker, job_id, attempt):
            _callbacks.setdefault((worker, job_id), []).append(callback)
            return
    _call(job_id, callback)


def time_out(worker: str, job_id: int, attempt: int) -> Callable[[], None]:
    """Ask `attempt` of the job, past its timeout, to stop: raise its flag now (call this
    before its outcome is posted, while no other attempt of the job can run here); returns
    what calls the callbacks it registered, to be called once the outcome is posted (a
    callback may take seconds: a report's cancel reaches the server)."""
    with _lock:
        _timed_out.add((worker, job_id, attempt))
        callbacks = _callbacks.pop((worker, job_id), [])

    def call_them() -> None:
        for callback in callbacks:
            _call(job_id, callback)

    return call_them


def returned(worker: str, job_id: int, attempt: int) -> None:
    """The thread of an attempt abandoned past its timeout has returned: drop its flag."""
    with _lock:
        _timed_out.discard((worker, job_id, attempt))


def _request(worker: str, job_id: int) -> None:
    with _lock:
        _requested.add((worker, job_id))
        callbacks = _callbacks.pop((worker, job_id), [])
    for callback in callbacks:
        _call(job_id, callback)


def _forget(worker: str, job_id: int) -> None:
    """Drop a finished job's flag and callbacks (its task has returned: nothing registers any
    more, so the common case, nothing to drop, needs no lock)."""
    key = (worker, job_id)
    if key not in _requested and key not in _callbacks:
        return
    with _lock:
        _requested.discard(key)
        _callbacks.pop(key, None)


def _call(job_id: int, callback: Callable[[], None]) -> None:
    """Run a task's cancel callback; what it raises is logged, never the loop's problem."""
    try:
        callback()
    except Exception as exc:
        log_event(
            log,
            "cancel_callback_failed",
            logging.WARNING,
            job=job_id,
            error=f"{type(exc).__name__}: {db.first_line(exc)}",
        )


# --- the loop's side --------------------------------------------------------------------------


class CancelWatch:
    """The cancel requests of one worker's running jobs (called from its loop thread only)."""

    def __init__(
        self,
        worker: str,
        *,
        requested: RequestedQuery = requested_in_db,
        grace: float = CANCEL_GRACE_S,
        on_overdue: Callable[[int], None] | None = None,
    ) -> None:
        self.worker = worker
        self.grace = grace
        #: Called once with a job id whose task still runs `grace` s after the request.
        self.on_overdue = on_overdue
        self._query = requested
        self._check_due = False
        self._since: dict[int, float] = {}  # job id -> when the loop learned of its request
        self._overdue: set[int] = set()

    def notified(self, payloads: Iterable[str]) -> None:
        """The loop's notifications: a cancel request makes the next check() ask."""
        if any(payload.startswith(db.CONTROL_PREFIX + CANCEL_PAYLOAD) for payload in payloads):
            self._check_due = True

    def poll(self) -> None:
        """The loop's poll: check again, in case a notification was lost."""
        self._check_due = True

    def check(self, conn: psycopg.Connection, running: Collection[int], now: float) -> None:
        """Learn of new requests among `running` (one query, only when notified or polled),
        and call on_overdue for tasks that ignored theirs past the grace period."""
        if not self._check_due and not self._since:
            return  # the loop's common turn: nothing to ask, nobody to watch
        if self._check_due:
            self._check_due = False
            if running:
                for job_id in sorted(self._query(conn, self.worker, list(running))):
                    if job_id not in self._since:
                        self._since[job_id] = now
                        log_event(log, "cancel_requested", job=job_id, worker=self.worker)
                        _request(self.worker, job_id)
        for job_id, since in self._since.items():
            if job_id not in self._overdue and now - since >= self.grace:
                self._overdue.add(job_id)
                if self.grace > 0:
                    log_event(
                        log,
                        "cancel_ignored",
                        logging.WARNING,
                        job=job_id,
                        worker=self.worker,
                        grace_s=self.grace,
                        msg="the task still runs; it ends cancelled when it returns or is stopped",
                    )
                if self.on_overdue is not None:
                    self.on_overdue(job_id)

    def outcome(self, outcome: Outcome) -> Outcome:
        """The outcome to record for a finished job: a JobCancelled failure, never retried, if
        its cancel was requested; else `outcome` itself."""
        if not self._since and not _callbacks:
            return outcome  # the common case: no request, no callback anywhere
        job_id = outcome.job.id
        _forget(self.worker, job_id)
        self._overdue.discard(job_id)
        if self._since.pop(job_id, None) is None:
            return outcome
        how = "the task returned" if outcome.error is None else outcome.error.splitlines()[0]
        error = f"JobCancelled: cancelled while running ({how})"
        return outcome._replace(result=None, error=error, retryable=False)
