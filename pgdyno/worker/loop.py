"""The worker loop: wake on NOTIFY or poll, claim in batches, run, heartbeat, drain on SIGTERM.

One thread (the loop) talks to Postgres; `concurrency` executor threads run the tasks. The loop
claims as many jobs as there are free slots in one statement, and reports finished jobs in the
same statement as the next claim, so a busy worker commits once per batch, not once per job.
NOTIFY is only a hint: the loop also polls, and claims again after every reconnect.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import psycopg

from pgdyno import backoff, db, queue
from pgdyno.config import Settings
from pgdyno.logfmt import log_event
from pgdyno.migrate import require_migrated
from pgdyno.queue import ClaimedJob
from pgdyno.worker import executor as execution
from pgdyno.worker.executor import Outcome
from pgdyno.worker.threads import ExecutorPool, Wakeup
from pgdyno.worker.vacuum import HotTableVacuum

log = logging.getLogger(__name__)

#: Called by an idle worker with its work connection and the seconds it has been idle;
#: returns how many seconds until it wants to be called again (None: not until the worker has
#: been busy and is idle again). Scale-to-zero (scale_down.py) is one.
IdleCallback = Callable[[psycopg.Connection, float], float | None]


def worker_id(dyno: str | None = None) -> str:
    """A name unique to this process, readable in `pgdyno jobs show`: winston.1:4242:9f3a."""
    return f"{dyno or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    """Runs jobs from `queues` until stopped (or, in burst mode, until they are drained)."""

    def __init__(
        self,
        settings: Settings,
        queues: Sequence[str],
        *,
        burst: bool = False,
        idle_callback: IdleCallback | None = None,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        self.settings = settings
        self.queues = list(dict.fromkeys(queues))
        self.burst = burst
        self.id = worker_id(settings.dyno)
        self.idle_callback = idle_callback
        self._dsn = settings.require_database_url()
        self._conn: psycopg.Connection | None = None
        self._listen: psycopg.Connection | None = None
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._grace_deadline = float("inf")
        self._running: dict[int, ClaimedJob] = {}
        self._done: list[tuple[int, str | None]] = []
        self._failed: list[Outcome] = []
        self._wakeup = Wakeup()
        self._pool = ExecutorPool(
            settings.concurrency,
            self._wakeup,
            bind=lambda: execution.bind_thread(self.id, self._dsn, self._set_progress),
        )
        self._outcomes = self._pool.outcomes
        self._claim_due = True
        self._next_poll = 0.0
        self._next_heartbeat = float("inf")
        self._next_due = float("inf")
        self._next_idle_call = 0.0
        self._idle_since: float | None = None
        self._failures = 0  # consecutive connection failures, for backoff
        self._conflicts = 0  # consecutive statements that lost a race, for backoff
        self._progress: dict[int, dict[str, Any]] = {}  # latest progress per running job
        self._vacuum = HotTableVacuum(self._dsn, self.id)

    # --- control -----------------------------------------------------------------------------

    def stop(self, immediate: bool = False) -> None:
        """Stop claiming; running jobs get the grace period (none if `immediate`)."""
        if not self._stopping.is_set():
            self._grace_deadline = time.monotonic() + self.settings.grace
            self._stopping.set()
        if immediate:
            self._abort.set()
        self._wakeup.poke()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop gracefully; a second SIGINT stops at once."""

        def handle(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            again = self._stopping.is_set()
            log_event(
                log,
                "shutdown_requested",
                signal=name,
                worker=self.id,
                running=len(self._running),
                grace_s=self.settings.grace,
                immediate=again and signum == signal.SIGINT,
            )
            self.stop(immediate=again and signum == signal.SIGINT)

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # --- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped; returns the process exit code (0 on a clean stop)."""
        log_event(
            log,
            "worker_started",
            worker=self.id,
            queues=",".join(self.queues),
            concurrency=self.settings.concurrency,
            burst=self.burst,
        )
        self._pool.start()
        try:
            while True:
                if self._conn is None and not self._connect():
                    break
                try:
                    if self._step():
                        break
                    self._failures = self._conflicts = 0
                except db.CONFLICTS as exc:
                    self._after_conflict(exc)
                except psycopg.OperationalError as exc:
                    log_event(
                        log,
                        "db_connection_lost",
                        logging.WARNING,
                        worker=self.id,
                        error=db.first_line(exc),
                        running=len(self._running),
                    )
                    self._disconnect()
        finally:
            self._disconnect()
            self._pool.stop()
        log_event(log, "worker_stopped", worker=self.id)
        return 0

    def _step(self) -> bool:
        """One turn of the loop; True when the worker should exit."""
        self._collect_outcomes()
        self._record_failures()
        now = time.monotonic()
        if self._stopping.is_set():
            if self._abort.is_set() or now >= self._grace_deadline:
                self._flush()
                self._hand_back()
                return True
            if not self._running and not self._outcomes:
                self._flush()
                return True
        polled = now >= self._next_poll
        if polled:
            self._poll(now)
        self._read_notifications()
        timer_fired = now >= self._next_due
        if timer_fired:
            self._next_due = float("inf")
            self._claim_due = True
        free = self.settings.concurrency - len(self._running)
        # Reporting finished jobs costs a statement anyway: claim in it whenever slots are free.
        claim = free > 0 and not self._stopping.is_set() and (self._claim_due or bool(self._done))
        claimed = self._flush(limit=free if claim else 0)
        if claim:
            self._claim_due = len(claimed) == free
        idle = not self._running and not self._outcomes
        if claim and idle:
            if self.burst:
                log_event(log, "queues_drained", worker=self.id, queues=",".join(self.queues))
                return True
            # After the timer fired too: its job may have gone to another worker, and the
            # next scheduled job needs a timer of its own (or it waits for the next poll).
            if polled or timer_fired or self._idle_since is None:
                self._schedule_next_due()
        self._track_idle(now, idle)
        if self._running and now >= self._next_heartbeat:
            self._heartbeat()
        if self._progress:
            self._write_progress()
        more_to_claim = (
            self._claim_due
            and not self._stopping.is_set()
            and len(self._running) < self.settings.concurrency
        )
        if not self._outcomes and not more_to_claim:
            self._sleep()
        return False

    # --- database turns ----------------------------------------------------------------------

    def _after_conflict(self, exc: psycopg.OperationalError) -> None:
        """A statement lost a race with another session; the next turn runs it again.

        Jobs move between partitions when they finish, so a claim whose snapshot still saw a
        job as ready can find it moved ("tuple to be locked was already moved to another
        partition", SQLSTATE 40001); deadlocks are the same kind of error. The worker's
        statements run one per transaction, so none of it happened and the connection is fine:
        reconnecting would only cost time.
        """
        self._conflicts += 1
        log_event(
            log,
            "db_conflict",
            logging.DEBUG,
            worker=self.id,
            attempt=self._conflicts,
            error=db.first_line(exc),
        )
        if self._conflicts > 1:
            self._pause(backoff.delay(self._conflicts - 1, 0.01, 1.0))

    def _flush(self, limit: int = 0) -> list[ClaimedJob]:
        """Report finished jobs and claim up to `limit` more, in one statement."""
        if not self._done and limit <= 0:
            return []
        assert self._conn is not None
        claimed = queue.complete_and_claim(
            self._conn,
            worker=self.id,
            queues=self.queues,
            limit=limit,
            lease=self.settings.lease,
            done=self._done,
        )
        self._vacuum.finished(len(self._done))
        self._done = []
        if claimed:
            if not self._running:
                self._next_heartbeat = time.monotonic() + self.settings.lease / 3
            for job in claimed:
                self._running[job.id] = job
                self._pool.submit(job)
        return claimed

    def _record_failures(self) -> None:
        assert self._conn is not None
        while self._failed:
            outcome = self._failed[0]
            job = outcome.job
            retry_in = None
            if outcome.retryable and job.attempts < job.max_attempts:
                retry_in = backoff.delay(
                    job.attempts, self.settings.retry_base, self.settings.retry_max
                )
            state = queue.fail(
                self._conn,
                worker=self.id,
                job_id=job.id,
                error=outcome.error or "",
                retry_in=retry_in,
            )
            self._failed.pop(0)
            first_line = outcome.error.splitlines()[0] if outcome.error else ""
            retrying = state == "ready" and retry_in is not None
            log_event(
                log,
                "job_retry" if retrying else "job_failed",
                logging.INFO if retrying else logging.WARNING,
                job=job.id,
                task=job.task,
                queue=job.queue,
                attempt=job.attempts,
                max_attempts=job.max_attempts,
                retry_in_s=round(retry_in, 3) if retrying and retry_in else None,
                duration_ms=round(outcome.duration_s * 1000, 1),
                error=first_line,
            )

    def _poll(self, now: float) -> None:
        """The safety net: rescue expired leases and claim even without a notification."""
        assert self._conn is not None
        self._next_poll = now + self.settings.poll_interval
        self._claim_due = True
        for job in queue.rescue_expired(self._conn):
            log_event(
                log,
                "job_rescued",
                logging.WARNING,
                job=job["id"],
                queue=job["queue"],
                status=job["status"],
                error=job["error"],
            )

    def _heartbeat(self) -> None:
        assert self._conn is not None
        ids = list(self._running)
        held = queue.heartbeat(self._conn, worker=self.id, ids=ids, lease=self.settings.lease)
        for job_id in set(ids) - held:
            log_event(log, "lease_lost", logging.WARNING, job=job_id, worker=self.id)
        self._next_heartbeat = time.monotonic() + self.settings.lease / 3

    def _set_progress(self, job_id: int, progress: dict[str, Any]) -> None:
        """From a task's thread: keep the latest progress and wake the loop to write it."""
        self._progress[job_id] = progress
        self._wakeup.poke_if_sleeping()

    def _write_progress(self) -> None:
        assert self._conn is not None
        for job_id in list(self._progress):
            progress = self._progress.pop(job_id)
            if job_id in self._running:
                queue.set_progress(self._conn, worker=self.id, job_id=job_id, progress=progress)

    def _hand_back(self) -> None:
        if not self._running or self._conn is None:
            return
        released = queue.release(self._conn, worker=self.id, ids=list(self._running))
        for job_id in released:
            job = self._running[job_id]
            log_event(
                log, "job_handed_back", job=job_id, task=job.task, queue=job.queue, worker=self.id
            )
        self._running.clear()

    def _read_notifications(self) -> None:
        assert self._listen is not None
        payloads = db.drain_notifications(self._listen)
        if any(payload in self.queues for payload in payloads):
            self._claim_due = True

    def _schedule_next_due(self) -> None:
        """Wake up when the earliest scheduled (run_at) job of our queues becomes due.

        due_in is counted from the query's start, so it is added to the clock read after the
        query: the timer may fire a little late, never early (an early claim finds nothing).
        """
        assert self._conn is not None
        due_in = queue.next_due_in(self._conn, self.queues)
        if due_in is not None:
            self._next_due = time.monotonic() + max(due_in, 0.0)

    def _track_idle(self, now: float, idle: bool) -> None:
        """Track how long the worker has had nothing to run; tell the idle callback."""
        if not idle:
            self._idle_since = None
            self._next_idle_call = 0.0
            return
        if self._idle_since is None:
            self._idle_since = now
        if self.idle_callback is not None and now >= self._next_idle_call:
            assert self._conn is not None
            again = self.idle_callback(self._conn, now - self._idle_since)
            self._next_idle_call = now + again if again is not None else float("inf")

    # --- waiting and connections ---------------------------------------------------------------

    def _sleep(self) -> None:
        """Block until a notification, a finished job, a signal or the next timer."""
        assert self._listen is not None
        now = time.monotonic()
        deadlines = [self._next_poll, self._next_due]
        # Only an idle callback has an idle deadline: without one, _next_idle_call stays 0.0,
        # and counting it would make every idle turn a zero-timeout wait (a busy loop).
        if self._idle_since is not None and self.idle_callback is not None:
            deadlines.append(self._next_idle_call)
        if self._running:
            deadlines.append(self._next_heartbeat)
        if self._stopping.is_set():
            deadlines.append(self._grace_deadline)
        timeout = max(0.0, min(deadlines) - now)
        self._wakeup.wait([self._listen.pgconn.socket], timeout, lambda: bool(self._outcomes))

    def _connect(self) -> bool:
        """(Re)connect both connections with backoff; False if the worker gave up (stopping)."""
        for attempt in itertools.count(1):
            self._failures += 1
            if self._failures > 1:
                self._pause(backoff.delay(self._failures - 1, 0.1, 5.0))
            if self._give_up_connecting():
                return False
            try:
                self._conn = db.connect(self._dsn, application_name=f"pgdyno worker {self.id}")
                require_migrated(self._conn)  # before the release phase ran: wait, retry
                queue.setup_worker_session(self._conn)
                self._listen = db.connect(self._dsn, application_name=f"pgdyno listen {self.id}")
                db.listen(self._listen)
                self._after_reconnect(attempt)
                return True
            except (psycopg.OperationalError, db.DatabaseUnavailable) as exc:
                self._disconnect()
                log_event(
                    log,
                    "db_unavailable",
                    logging.WARNING,
                    worker=self.id,
                    attempt=attempt,
                    error=db.first_line(exc),
                )
        return False

    def _give_up_connecting(self) -> bool:
        """Whether a stopping worker stops trying to reach Postgres.

        At once when it has nothing to report or hand back (waiting out the grace period would
        only delay the exit), or on an immediate stop; otherwise when the grace period is over.
        """
        if not self._stopping.is_set():
            return False
        pending = self._running or self._done or self._failed or self._outcomes
        return self._abort.is_set() or not pending or time.monotonic() >= self._grace_deadline

    def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if stop() pokes the loop meanwhile."""
        self._wakeup.wait([], seconds)

    def _after_reconnect(self, attempt: int) -> None:
        """Catch up: hand back claims whose reply was lost, then claim at once."""
        assert self._conn is not None
        if attempt > 1 or self._running or self._done:
            keep = [*self._running, *(job_id for job_id, _ in self._done)]
            released = queue.release(self._conn, worker=self.id, ids=None, keep=keep)
            log_event(
                log, "db_reconnected", worker=self.id, attempt=attempt, released=len(released)
            )
        self._claim_due = True
        self._next_poll = 0.0

    def _disconnect(self) -> None:
        for conn in (self._conn, self._listen):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._conn = self._listen = None

    # --- outcomes ------------------------------------------------------------------------------

    def _collect_outcomes(self) -> None:
        """Move finished jobs from the executors into the done / failed lists, logging each."""
        while self._outcomes:
            outcome = self._outcomes.popleft()
            job = outcome.job
            if self._running.pop(job.id, None) is None:
                continue  # handed back already
            if outcome.error is None:
                self._done.append((job.id, outcome.result))
                log_event(
                    log,
                    "job_done",
                    job=job.id,
                    task=job.task,
                    queue=job.queue,
                    attempt=job.attempts,
                    duration_ms=round(outcome.duration_s * 1000, 1),
                )
            else:
                self._failed.append(outcome)
