"""The worker loop: wake on NOTIFY or poll, claim in batches, run, heartbeat, drain on SIGTERM.

One thread (the loop) talks to Postgres; `concurrency` executor threads run the tasks (in
themselves, or each in a child process with --pool process: worker/threads.py, worker/pool.py).
The loop claims as many jobs as there are free slots in one statement, and reports finished
jobs in the same statement as the next claim, so a busy worker commits once per batch, not once
per job. NOTIFY is only a hint: the loop also polls, and claims again after every reconnect.

Fencing: every write about a job (done, failed, heartbeat, progress) names the attempt the
worker runs, and the database refuses it unless the worker still holds that attempt; a refused
write is logged (`write_refused`, `lease_lost`) and counted, never applied. Before it rescues
anything (its poll, after a reconnect) the worker renews its own leases, so an outage longer
than the lease does not make it rescue, and run again, the jobs it is still running.

The loop reads time and waits through a `Clock`, runs job statements through a `JobQueue` and
opens its connections through a `SessionOpener` (worker/session.py): tests drive it turn by
turn with fakes of all three (tests/unit/test_worker_loop.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Sequence

import psycopg

from pgdyno import backoff, db, logfmt, queue, rescue, signals
from pgdyno.clock import SYSTEM_CLOCK, Clock, Wakeup
from pgdyno.config import Settings
from pgdyno.logfmt import log_event
from pgdyno.queue import ClaimedJob, Finished
from pgdyno.registry import Registration
from pgdyno.worker import ahead, executor, fencing, health
from pgdyno.worker.cancels import CANCEL_GRACE_S, CancelWatch
from pgdyno.worker.executor import Outcome
from pgdyno.worker.hints import NotifyHints, earliest
from pgdyno.worker.session import JobQueue, PostgresSession, Session, SessionOpener
from pgdyno.worker.storable import storable_text
from pgdyno.worker.threads import ExecutorPool
from pgdyno.worker.timers import Timers, passed
from pgdyno.worker.vacuum import HotTableVacuum
from pgdyno.worker.waiting import Waiting

log = logging.getLogger(__name__)

#: Called by an idle worker with its work connection and the seconds it has been idle;
#: returns how many seconds until it wants to be called again (None: not until the worker has
#: been busy and is idle again). Scale-to-zero (pgdyno.scaling.idle) is one.
IdleCallback = Callable[[psycopg.Connection, float], float | None]


def worker_id(dyno: str | None = None) -> str:
    """A name unique to this process, readable in `pgdyno jobs show`: winston.1:4242:9f3a."""
    return f"{dyno or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    """Runs jobs from `queues` until stopped (or, in burst mode, until they are drained).

    `settings`: the database URL, concurrency, lease, grace, poll interval, retry delays.
    `idle_callback`: called while the worker has nothing to run (scale-to-zero is one).
    `id`: the worker's name in the jobs it holds (default: `worker_id(settings.dyno)`).
    `clock`, `jobs`, `connect`: the loop's seams, for tests; the defaults are the real ones.
    `cancels`: the cancel requests of running jobs (default: a CancelWatch asking Postgres).
    Raises ValueError without queues, ConfigError without a database URL.
    """

    def __init__(
        self,
        settings: Settings,
        queues: Sequence[str],
        *,
        burst: bool = False,
        idle_callback: IdleCallback | None = None,
        id: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        jobs: JobQueue = queue,
        connect: SessionOpener | None = None,
        cancels: CancelWatch | None = None,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        self.settings = settings
        self.queues = list(dict.fromkeys(queues))
        self.burst = burst
        self.id = id or worker_id(settings.dyno)
        self.idle_callback = idle_callback
        self._dsn = settings.require_database_url()
        self._clock = clock
        self._jobs = jobs
        # The LISTEN check runs as often as heartbeats, at most every 10 s (worker/health.py).
        check_every = min(health.INTERVAL, settings.lease / 3)
        self._open_session = connect or functools.partial(
            PostgresSession.open, check_every=check_every
        )
        self._session: Session | None = None
        self._reconnect = db.Reconnect(base=0.1, cap=5.0, pause=self._pause, worker=self.id)
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._timers = Timers()
        self._claim_due = True
        self._idle_since: float | None = None
        self._conflicts = 0  # consecutive statements that lost a race, for backoff
        self._running: dict[int, ClaimedJob] = {}
        self._done: list[Finished] = []
        self._failed: list[Outcome] = []
        # The latest progress per running job: (attempt, JSON text).
        self._progress: dict[int, tuple[int, str]] = {}
        self._fence = fencing.Fence(self.id)
        self._wakeup = Wakeup(clock)
        self._hints = NotifyHints(self.queues)  # notifications coalesced (worker/hints.py)
        self._waiting = Waiting(self.id, self.queues)  # enqueuers notify while it waits
        self._ahead = ahead.ClaimAhead(settings.concurrency)  # short jobs: claim ahead
        self._pool = ExecutorPool.for_worker(
            settings, self.id, self._dsn, self._wakeup, self._set_progress
        )
        self._outcomes = self._pool.outcomes
        self._vacuum = HotTableVacuum(self._dsn, self.id)
        self._cancels = cancels or CancelWatch(
            self.id,
            # A job process cannot read the cancel flag: it is stopped at once (worker/cancels.py).
            grace=0.0 if settings.pool == "process" else CANCEL_GRACE_S,
            on_overdue=self._stop_cancelled,
        )
        #: The worker's row in pgdyno.workers (pgdyno/registry.py), set by `pgdyno worker` and
        #: build_worker; None: the worker is not registered.
        self.registration: Registration | None = None

    @property
    def refused_writes(self) -> int:
        """Writes the database refused because this worker no longer held the attempt."""
        return self._fence.refused

    # --- control -----------------------------------------------------------------------------

    def stop(self, immediate: bool = False) -> None:
        """Stop claiming; running jobs get the grace period (none if `immediate`).

        Safe from any thread and from a signal handler."""
        if not self._stopping.is_set():
            self._timers.grace = self._clock.now() + self.settings.grace
            self._stopping.set()
        if immediate:
            self._abort.set()
        self._wakeup.poke()

    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM/SIGINT stop gracefully; a second SIGINT stops at once. Main thread only.
        Returns a function that puts the previous handlers back."""

        def handle(signum: signal.Signals) -> None:
            immediate = self._stopping.is_set() and signum == signal.SIGINT
            log_event(
                log,
                "shutdown_requested",
                signal=signum.name,
                worker=self.id,
                running=len(self._running),
                grace_s=self.settings.grace,
                immediate=immediate,
            )
            self.stop(immediate=immediate)

        return signals.install(handle)

    # --- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped; returns the process exit code (0 on a clean stop)."""
        log_event(
            log,
            "worker_started",
            worker=self.id,
            queues=",".join(self.queues),
            concurrency=self.settings.concurrency,
            pool=self.settings.pool,
            burst=self.burst,
        )
        self._pool.start()
        logfmt.batching(True)  # a job's log line is not a write of its own (pgdyno/logfmt.py)
        try:
            while not self._turn():
                pass
        finally:
            logfmt.batching(False)
            if self._session is not None:
                with contextlib.suppress(psycopg.Error):  # else the row is pruned later
                    self._waiting.leave(self._jobs, self._conn)
            if self.registration is not None and self._session is not None:
                with contextlib.suppress(psycopg.Error):  # else it expires (registry.EXPIRY_S)
                    self.registration.stopped(self._conn)
            self._disconnect()
            self._pool.stop()
        log_event(log, "worker_stopped", worker=self.id, refused_writes=self._fence.refused)
        return 0

    def _turn(self) -> bool:
        """Connect if needed, then one step, surviving lost races and lost connections;
        True when the worker should exit."""
        if self._session is None and not self._connect():
            return True
        try:
            if self._step():
                return True
            self._reconnect.worked()
            self._conflicts = 0
        except db.CONFLICTS as exc:
            self._after_conflict(exc)
        except psycopg.OperationalError as exc:
            # At once: a worker that held a working session reconnects without waiting.
            self._reconnect.lost(exc, back_off=False, running=len(self._running))
            self._disconnect()
        return False

    def _step(self) -> bool:
        """One turn of the loop; True when the worker should exit."""
        self._collect_outcomes()
        self._record_failures()
        now = self._clock.now()
        if self._stopping.is_set():
            if self._abort.is_set() or passed(self._timers.grace, now):
                self._settle()
                self._flush()
                self._hand_back()
                return True
            if not self._running and not self._outcomes:
                self._flush()
                return True
        polled = passed(self._timers.poll, now)
        if polled:
            self._poll(now)
        self._read_notifications()
        self._cancels.check(self._conn, self._running, now)  # cancel requests: worker/cancels.py
        timer_fired = passed(self._timers.due, now)
        if timer_fired:
            self._timers.due = None
            self._claim_due = True
        self._hold_ahead(now)  # jobs claimed ahead that waited too long go back (ahead.py)
        # Free slots (abandoned threads keep theirs), plus the jobs short ones let it claim
        # ahead (worker/ahead.py).
        free = self._free_slots(ahead=self._ahead.extra)
        report = bool(self._done) and self._ahead.flush_now(len(self._done), self._pool.queued())
        # Reporting finished jobs costs a statement anyway: claim in it whenever slots are free.
        claim = free > 0 and not self._stopping.is_set() and (self._claim_due or report)
        claimed = self._flush(limit=free if claim else 0) if claim or report else []
        self._hints.settle(now, worked=bool(claimed))
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
        if self.registration is not None:  # the workers registry: heartbeat, busy or idle
            running = len(self._running)
            self._timers.registry = self.registration.tick(self._conn, now, running=running)
        if self._running and passed(self._timers.heartbeat, now):
            self._heartbeat()
        if self._progress:
            self._write_progress()
        more_to_claim = (
            self._claim_due
            and not self._stopping.is_set()
            and self._free_slots(ahead=self._ahead.extra) > 0
        )
        if not self._outcomes and not more_to_claim:
            free = self._free_slots()  # abandoned threads keep their slots
            takes = free > 0 and not self.burst
            if self._waiting.before_sleep(
                self._jobs, self._conn, now, free=takes, stopping=self._stopping.is_set()
            ):
                # Registered as waiting just now (worker/waiting.py): a job committed before
                # the registration sent no notification, so look once more before sleeping.
                claimed = self._flush(limit=free)
                self._claim_due = len(claimed) == free
                self._hints.settle(now, worked=bool(claimed))  # their notifications may follow
                if claimed:
                    # Busy again: once idle, it looks for the next scheduled job anew (a job
                    # that finished before the next turn left it "idle since" before the claim,
                    # and the timer for a job scheduled meanwhile was never set).
                    self._track_idle(now, False)
                    return False
            self._sleep()
        return False

    def _free_slots(self, ahead: int = 0) -> int:
        """Slots of --concurrency with no job: a thread still running a job abandoned at its
        timeout keeps its slot until it returns (worker/abandoned.py); `ahead`: the jobs it
        may hold beyond its slots (worker/ahead.py), counted before the jobs it holds, so that
        those it claimed ahead are not claimed again on top."""
        held = len(self._running) + self._pool.abandoned
        return max(0, self.settings.concurrency + ahead - held)

    # --- database turns ----------------------------------------------------------------------

    @property
    def _conn(self) -> psycopg.Connection:
        """The work connection of the open session (only called while one is open)."""
        if self._session is None:
            raise psycopg.OperationalError("the worker has no connection")
        return self._session.work

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
        try:
            claimed = self._jobs.complete_and_claim(
                self._conn,
                worker=self.id,
                queues=self.queues,
                limit=limit,
                lease=self.settings.lease,
                done=self._done,
            )
        except psycopg.errors.DataError:
            if not self._done:
                raise
            # A result the database refused: find it, fail it.
            fencing.complete_singly(
                self._jobs,
                self._conn,
                worker=self.id,
                queues=self.queues,
                lease=self.settings.lease,
                done=self._done,
                refused=self._fence.refused_write,
            )
            self._vacuum.finished(len(self._done))
            self._done = []
            return []
        for job_id in getattr(claimed, "refused", ()):
            self._fence.refused_write("complete", job_id)
        self._vacuum.finished(len(self._done))
        self._done = []
        if claimed:
            if not self._running:
                self._timers.heartbeat = self._clock.now() + self.settings.lease / 3
            for job in claimed:
                self._running[job.id] = job
            self._pool.submit_all(claimed, at=self._clock.now())  # one hand-off for the batch
        return claimed

    def _record_failures(self) -> None:
        while self._failed:
            outcome = self._failed[0]
            job = outcome.job
            retry_in = backoff.retry_in(
                job.attempts,
                job.max_attempts,
                outcome.retryable,
                self.settings.retry_base,
                self.settings.retry_max,
            )
            state = self._jobs.fail(
                self._conn,
                worker=self.id,
                job_id=job.id,
                error=storable_text(outcome.error or "", executor.MAX_ERROR_CHARS),
                retry_in=retry_in,
                attempt=job.attempts,
                peak_rss_bytes=outcome.peak_rss_bytes,
            )
            self._failed.pop(0)
            if state is None:
                self._fence.refused_write("fail", job.id, job.attempts)
                continue
            executor.log_outcome(outcome, retry_in if state == "ready" else None)

    def _poll(self, now: float) -> None:
        """The safety net: rescue expired leases and claim even without a notification."""
        self._timers.poll = now + self.settings.poll_interval
        self._claim_due = True
        self._cancels.poll()
        if self._running and passed(self._timers.heartbeat, now):
            self._heartbeat()  # renew our own leases before rescuing anyone's
        rescue.rescue_expired(self._conn, self._jobs.rescue_expired)

    def _heartbeat(self) -> None:
        jobs = list(self._running.values())
        held = self._jobs.heartbeat(
            self._conn,
            worker=self.id,
            ids=[job.id for job in jobs],
            lease=self.settings.lease,
            attempts=[job.attempts for job in jobs],
        )
        for job in jobs:
            if job.id not in held:
                self._lease_lost(job)
        self._timers.heartbeat = self._clock.now() + self.settings.lease / 3

    def _lease_lost(self, job: ClaimedJob) -> None:
        """Another worker took over `job` (its lease expired and it was rescued): stop running
        it here. A job in a child process is killed; one in a thread runs on, and whatever it
        reports is dropped (and the database would refuse it anyway)."""
        self._running.pop(job.id, None)
        self._progress.pop(job.id, None)
        stopped = self._pool.stop_job(job.id, f"LeaseLost: job {job.id} runs elsewhere now")
        self._fence.lease_lost(job, stopped=stopped)

    def _set_progress(self, job_id: int, attempt: int, progress: str) -> None:
        """From a task's thread: keep the latest progress and wake the loop to write it."""
        self._progress[job_id] = (attempt, progress)
        self._wakeup.poke_if_sleeping()

    def _write_progress(self) -> None:
        for job_id in list(self._progress):
            attempt, progress = self._progress.pop(job_id)
            running = self._running.get(job_id)
            if running is None or running.attempts != attempt:
                continue  # finished, handed back or abandoned meanwhile
            written = self._jobs.set_progress(
                self._conn, worker=self.id, job_id=job_id, progress=progress, attempt=attempt
            )
            if written is False:
                self._fence.refused_write("progress", job_id, attempt)

    def _settle(self) -> None:
        """Before handing jobs back: stop the job processes, then record the jobs that finished
        meanwhile (one done at the last moment is reported, not handed back to run again)."""
        stopped = set(self._pool.stop_all())
        deadline = self._clock.now() + 2.0

        def arrived() -> bool:
            return stopped <= {outcome.job.id for outcome in self._outcomes}

        while stopped and not arrived() and self._clock.now() < deadline:
            self._wakeup.wait([], deadline - self._clock.now(), arrived)
        self._collect_outcomes()
        self._record_failures()

    def _hold_ahead(self, now: float) -> None:
        """Hand back, unstarted and uncounted, the jobs claimed ahead that waited HOLD_S for a
        thread (the job before them is not short after all): any worker may take them."""
        oldest = self._pool.oldest_queued()
        if oldest is None or not passed(oldest + ahead.HOLD_S - 1e-9, now):  # 1e-9: rounding
            return
        self._hand_back_unstarted()
        self._ahead.handed_back()

    def _hand_back_unstarted(self) -> None:
        withdrawn = set(self._pool.withdraw_queued())
        if not withdrawn or self._session is None:
            return
        # A release of all but `keep` (as after a reconnect) does not count as a hand-back.
        keep = [
            *(job_id for job_id in self._running if job_id not in withdrawn),
            *(finished.id for finished in self._done),
            *(outcome.job.id for outcome in self._failed),
        ]
        released = self._jobs.release(self._conn, worker=self.id, ids=None, keep=keep)
        for job_id in withdrawn:
            self._running.pop(job_id, None)
        log_event(log, "jobs_handed_back_unstarted", worker=self.id, jobs=len(released))

    def _hand_back(self) -> None:
        if not self._running or self._session is None:
            return
        self._hand_back_unstarted()  # never started: not counted as handed back
        if not self._running:
            return
        self._pool.stop_all()  # no job process may outlive its hand-back (and run twice)
        released = self._jobs.release(self._conn, worker=self.id, ids=list(self._running))
        for job_id in released:
            job = self._running[job_id]
            log_event(
                log, "job_handed_back", job=job_id, task=job.task, queue=job.queue, worker=self.id
            )
        self._running.clear()
        self._timers.heartbeat = None

    def _stop_cancelled(self, job_id: int) -> None:
        """A cancelled job still running past its grace: stop its process (process pool only;
        a thread cannot be stopped, its job ends cancelled when the task returns)."""
        self._pool.stop_job(job_id, "JobCancelled: its process was stopped", retryable=False)

    def _read_notifications(self) -> None:
        if self._session is None:
            return
        # Cancel requests (control payloads) reach the cancel watch; queue names, the claim.
        if self._hints.read(self._session, self._clock.now(), also=self._cancels.notified):
            self._claim_due = True

    def _schedule_next_due(self) -> None:
        """Wake up when the earliest scheduled (run_at) job of our queues becomes due.

        due_in is counted from the query's start, so it is added to the clock read after the
        query: the timer may fire a little late, never early (an early claim finds nothing).
        """
        due_in = self._jobs.next_due_in(self._conn, self.queues)
        if due_in is not None:
            self._timers.due = self._clock.now() + max(due_in, 0.0)

    def _track_idle(self, now: float, idle: bool) -> None:
        """Track how long the worker has had nothing to run; tell the idle callback."""
        if not idle:
            self._idle_since = None
            self._timers.idle_call = None
            return
        if self._idle_since is None:
            self._idle_since = now
            self._timers.idle_call = now if self.idle_callback is not None else None
        if self.idle_callback is not None and passed(self._timers.idle_call, now):
            again = self.idle_callback(self._conn, now - self._idle_since)
            self._timers.idle_call = now + again if again is not None else None

    # --- waiting and connections ---------------------------------------------------------------

    def _sleep(self) -> None:
        """Block until a notification, a finished job, a signal or the next deadline."""
        if not self._running:
            self._timers.heartbeat = None
        now = self._clock.now()
        oldest = self._pool.oldest_queued()
        wake = earliest(
            self._timers.next_wake(),
            self._hints.quiet_until,
            self._waiting.wake_at(),
            None if oldest is None else oldest + ahead.HOLD_S,
        )
        timeout = None if wake is None else max(0.0, wake - now)
        fds = self._hints.fds(self._session, now) if self._session is not None else []
        check_in = self._session.wake_in() if self._session is not None else None
        if check_in is not None:
            timeout = check_in if timeout is None else min(timeout, check_in)
        logfmt.flush()  # the lines of this turn, before waiting
        self._wakeup.wait(fds, timeout, lambda: bool(self._outcomes))

    def _connect(self) -> bool:
        """(Re)connect with backoff; False if the worker gave up (stopping)."""
        attempts_before = self._reconnect.failures
        session = self._reconnect.connect(
            lambda: self._open_session(self._dsn, self.id), self._give_up_connecting
        )
        if session is None:
            return False
        self._session = session
        self._after_reconnect(self._reconnect.failures - attempts_before)
        return True

    def _give_up_connecting(self) -> bool:
        """Whether a stopping worker stops trying to reach Postgres.

        At once when it has nothing to report or hand back (waiting out the grace period would
        only delay the exit), or on an immediate stop; otherwise when the grace period is over.
        """
        if not self._stopping.is_set():
            return False
        pending = self._running or self._done or self._failed or self._outcomes
        return self._abort.is_set() or not pending or passed(self._timers.grace, self._clock.now())

    def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if stop() pokes the loop meanwhile."""
        self._wakeup.wait([], seconds)

    def _after_reconnect(self, attempt: int) -> None:
        """Catch up: renew the leases of the jobs still running here (the outage may have
        outlasted them: re-claim them before anyone runs them again), hand back claims whose
        reply was lost, then claim at once."""
        if self._running:
            self._heartbeat()
        if attempt > 1 or self._running or self._done or self._failed:
            # Every job this worker knows of stays: running, or finished with an outcome
            # still to write (done or failed).
            keep = [
                *self._running,
                *(finished.id for finished in self._done),
                *(outcome.job.id for outcome in self._failed),
            ]
            released = self._jobs.release(self._conn, worker=self.id, ids=None, keep=keep)
            log_event(
                log, "db_reconnected", worker=self.id, attempt=attempt, released=len(released)
            )
        self._claim_due = True
        self._timers.poll = 0.0

    def _disconnect(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None
        self._waiting.lost()

    # --- outcomes ------------------------------------------------------------------------------

    def _collect_outcomes(self) -> None:
        """Move finished jobs from the executors into the done / failed lists; each done job's
        line is logged, in order, once all are collected (executor.log_done: one batch)."""
        outcomes = self._outcomes
        if not outcomes:
            return
        now = self._clock.now()  # once: the outcomes of a turn came back together
        running, done, succeeded = self._running, self._done, []
        cancelled = self._cancels.outcome
        finished = self._ahead.finished
        while outcomes:
            # A job whose cancel was requested ends cancelled, whatever its task did.
            outcome = cancelled(outcomes.popleft())
            job = outcome.job
            finished(outcome.duration_s, now)
            held = running.get(job.id)
            if held is None or held.attempts != job.attempts or outcome.handed_back:
                continue  # handed back, or its lease lost: another attempt owns the job
            del running[job.id]
            if outcome.error is None:
                done.append(Finished(job.id, job.attempts, outcome.result, outcome.peak_rss_bytes))
                succeeded.append(outcome)
            else:
                self._failed.append(outcome)
        if succeeded and executor.log.isEnabledFor(logging.INFO):
            executor.log_done(succeeded)
