"""Fakes for driving the stateful core turn by turn: a clock, the worker's job statements and
session, and dyno processes. No database, no real waiting.

- `FakeClock` implements pgdyno.clock.Clock: `now()` moves only when a wait has nothing to
  wake it (then it jumps by the wait's timeout) or when a test calls `advance()`; scheduled
  calls (`call_later`) run when the clock passes their time, on the caller's thread.
- `FakeJobQueue` implements pgdyno.worker.session.JobQueue: an in-memory jobs table with the
  same rules as the SQL (claim due ready jobs, leases held by one worker and attempt, release
  without counting the attempt), every call recorded in `calls`.
- `FakeDatabase.open` is a SessionOpener: sessions whose notifications the test sends, and a
  database that can be "down" for a number of connection attempts.
- `FakeProcess` and `FakeSpawn` stand in for dyno processes (pgdyno.platform.dynos.Spawn).
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgdyno.clock import wait_readable
from pgdyno.errors import DatabaseUnavailable
from pgdyno.queue import Claimed, ClaimedJob, Finished

# --- the clock ----------------------------------------------------------------------------------


class FakeTimer:
    def __init__(self, at: float, action: Callable[[], None], name: str) -> None:
        self.at, self.action, self.name = at, action, name
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A monotonic clock that only moves when told to (or when a wait would block)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.start = start
        self._now = start
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, FakeTimer]] = []
        #: Every wait's timeout, in order (None: a wait without a limit).
        self.waits: list[float | None] = []
        #: Called with each wait's timeout before it is served: a test's way to act "meanwhile".
        self.on_wait: Callable[[float | None], None] | None = None

    def now(self) -> float:
        return self._now

    def elapsed(self) -> float:
        """Seconds since the clock was made."""
        return self._now - self.start

    def advance(self, seconds: float) -> None:
        """Move time forward, running the scheduled calls that come due, in order."""
        until = self._now + seconds
        while self._timers and self._timers[0][0] <= until:
            at, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, at)
            if not timer.cancelled:
                timer.action()
        self._now = until

    def wait_readable(self, fds: list[int], timeout: float | None) -> list[int]:
        self.waits.append(timeout)
        if self.on_wait is not None:
            self.on_wait(timeout)
        ready = wait_readable(fds, 0)
        if ready:
            return ready
        if timeout is None:
            raise AssertionError("the loop would wait forever: no deadline and nothing to wake it")
        self.advance(timeout)
        return []

    def call_later(self, delay: float, action: Callable[[], None], name: str) -> FakeTimer:
        timer = FakeTimer(self._now + delay, action, name)
        heapq.heappush(self._timers, (timer.at, next(self._seq), timer))
        return timer

    def pending(self, prefix: str = "") -> list[FakeTimer]:
        """Scheduled calls not run nor cancelled yet (whose name starts with `prefix`)."""
        return [
            timer
            for _, _, timer in sorted(self._timers)
            if not timer.cancelled and timer.name.startswith(prefix)
        ]


# --- the worker's database ----------------------------------------------------------------------


@dataclass
class FakeJob:
    id: int
    queue: str
    task: str
    args: dict[str, Any]
    max_attempts: int
    run_at: float
    status: str = "ready"
    attempts: int = 0
    worker: str | None = None
    result: str | None = None
    error: str | None = None
    progress: dict[str, Any] | None = None
    claimed_at: float | None = None
    cancel_requested: bool = False


class FakeJobQueue:
    """pgdyno.queue's worker statements over a dict; `calls` records (name, arguments)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.jobs: dict[int, FakeJob] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        #: Raised by the next statement (once): e.g. psycopg.OperationalError for a lost server.
        self.fail_next: BaseException | None = None
        #: What the next rescue_expired returns (once).
        self.expired: list[dict[str, Any]] = []
        #: What the next wait_for_jobs returns (once): False, an unsettled registration.
        self.settled = True
        self._ids = itertools.count(1)

    def insert(
        self,
        task: str,
        args: dict[str, Any] | None = None,
        *,
        queue: str = "q",
        delay: float = 0.0,
        max_attempts: int = 3,
    ) -> int:
        job_id = next(self._ids)
        self.jobs[job_id] = FakeJob(
            job_id, queue, task, args or {}, max_attempts, self.clock.now() + delay
        )
        return job_id

    def called(self, name: str) -> list[dict[str, Any]]:
        """The arguments of every call of statement `name`, in order."""
        return [arguments for called, arguments in self.calls if called == name]

    def _call(self, name: str, **arguments: Any) -> None:
        self.calls.append((name, arguments))
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def _held(self, worker: str) -> list[FakeJob]:
        return [j for j in self.jobs.values() if j.status == "running" and j.worker == worker]

    def _holds(self, worker: str, job_id: int, attempt: int | None) -> bool:
        """The fencing rule: this worker holds the job, at that attempt (None: any)."""
        job = self.jobs[job_id]
        held = job.status == "running" and job.worker == worker
        return held and (attempt is None or job.attempts == attempt)

    # JobQueue

    def complete_and_claim(
        self,
        conn: Any,
        *,
        worker: str,
        queues: Sequence[str],
        limit: int,
        lease: float,
        done: Sequence[Finished | tuple[int, str | None]] = (),
    ) -> Claimed:
        reported = [Finished(d[0], None, d[1]) if len(d) == 2 else d for d in done]
        self._call(
            "complete_and_claim",
            worker=worker,
            limit=limit,
            done=[(d.id, d.result) for d in reported],
        )
        refused = []
        for finished in reported:
            job = self.jobs[finished.id]
            if self._holds(worker, finished.id, finished.attempt):
                job.status, job.result, job.worker = "done", finished.result, None
            else:
                refused.append(finished.id)
        due = sorted(
            (
                j
                for j in self.jobs.values()
                if j.status == "ready" and j.queue in queues and j.run_at <= self.clock.now()
            ),
            key=lambda j: (j.run_at, j.id),
        )
        claimed = []
        for job in due[:limit]:
            job.status, job.worker, job.claimed_at = "running", worker, self.clock.now()
            job.attempts += 1
            claimed.append(
                ClaimedJob(job.id, job.queue, job.task, job.args, job.attempts, job.max_attempts)
            )
        return Claimed(claimed, refused)

    def fail(
        self,
        conn: Any,
        *,
        worker: str,
        job_id: int,
        error: str,
        retry_in: float | None,
        attempt: int | None = None,
        peak_rss_bytes: int | None = None,
    ) -> str | None:
        self._call("fail", job_id=job_id, error=error, retry_in=retry_in)
        job = self.jobs[job_id]
        if not self._holds(worker, job_id, attempt):
            return None
        job.error, job.worker = error, None
        if retry_in is None:
            job.status = "failed"
        else:
            job.status, job.run_at = "ready", self.clock.now() + retry_in
        return job.status

    def heartbeat(
        self,
        conn: Any,
        *,
        worker: str,
        ids: Sequence[int],
        lease: float,
        attempts: Sequence[int] | None = None,
    ) -> set[int]:
        self._call("heartbeat", ids=sorted(ids), lease=lease)
        wanted = dict(zip(ids, attempts or [None] * len(ids), strict=True))
        held = set()
        for job_id, attempt in wanted.items():
            job = self.jobs[job_id]
            rescued = job.status == "ready" and job.worker is None and job.attempts == attempt
            if self._holds(worker, job_id, attempt) or (attempt is not None and rescued):
                job.status, job.worker = "running", worker  # renewed, or re-claimed
                held.add(job_id)
        return held

    def set_progress(
        self,
        conn: Any,
        *,
        worker: str,
        job_id: int,
        progress: Mapping[str, Any] | str,
        attempt: int | None = None,
    ) -> bool:
        fields = json.loads(progress) if isinstance(progress, str) else dict(progress)
        self._call("set_progress", job_id=job_id, progress=fields)
        if not self._holds(worker, job_id, attempt):
            return False
        self.jobs[job_id].progress = fields
        return True

    def release(
        self, conn: Any, *, worker: str, ids: Sequence[int] | None, keep: Sequence[int] = ()
    ) -> list[int]:
        self._call("release", ids=None if ids is None else sorted(ids), keep=sorted(keep))
        released = []
        for job in self._held(worker):
            if (ids is None or job.id in ids) and job.id not in keep:
                job.status, job.worker = "ready", None
                job.attempts -= 1
                released.append(job.id)
        return released

    def rescue_expired(self, conn: Any) -> list[dict[str, Any]]:
        self._call("rescue_expired")
        expired, self.expired = self.expired, []
        return expired

    def cancel_requested(self, conn: Any, worker: str, ids: Sequence[int]) -> set[int]:
        """pgdyno.worker.cancels.requested_in_db over the dict (a CancelWatch's query)."""
        self._call("cancel_requested", ids=sorted(ids))
        return {j.id for j in self._held(worker) if j.id in ids and j.cancel_requested}

    def next_due_in(self, conn: Any, queues: Sequence[str]) -> float | None:
        self._call("next_due_in")
        waiting = [
            j.run_at - self.clock.now()
            for j in self.jobs.values()
            if j.status == "ready" and j.queue in queues
        ]
        return min(waiting, default=None)

    def wait_for_jobs(
        self, conn: Any, *, holder: str, queues: Sequence[str], wait: float = 0.1
    ) -> bool:
        """Registers (a sleeper of `queues`); returns `settled`, then True again."""
        self._call("wait_for_jobs", queues=list(queues))
        settled, self.settled = self.settled, True
        return settled

    def stop_waiting(self, conn: Any) -> None:
        self._call("stop_waiting")


class FakeSession:
    """A worker session: `notify(queue)` stands for a NOTIFY from a committed INSERT."""

    def __init__(self) -> None:
        self.work: Any = object()
        self.closed = False
        self._payloads: list[str] = []
        self.lost = False

    def notify(self, *queues: str) -> None:
        self._payloads.extend(queues)

    def notifications(self) -> list[str]:
        if self.lost:
            raise psycopg.OperationalError("LISTEN connection lost")
        payloads, self._payloads = self._payloads, []
        return payloads

    def fds(self) -> list[int]:
        return []

    def wake_in(self) -> float | None:
        return None  # the LISTEN check is PostgresSession's (tests/acceptance checks it)

    def close(self) -> None:
        self.closed = True


class FakeDatabase:
    """Opens FakeSessions; `down` connection attempts fail first (DatabaseUnavailable)."""

    def __init__(self) -> None:
        self.sessions: list[FakeSession] = []
        self.attempts = 0
        self.down = 0

    @property
    def session(self) -> FakeSession:
        """The latest session."""
        return self.sessions[-1]

    def open(self, dsn: str, worker: str) -> FakeSession:
        self.attempts += 1
        if self.down:
            self.down -= 1
            raise DatabaseUnavailable("cannot connect to Postgres: connection refused")
        self.sessions.append(FakeSession())
        return self.session


# --- dyno processes -----------------------------------------------------------------------------


class FakeProcess:
    """A dyno process: prints `output`, then runs until `exit()`; SIGTERM ends it if it obeys."""

    def __init__(
        self, pid: int, command: str, env: Mapping[str, str], obeys_sigterm: bool = True
    ) -> None:
        self.pid, self.command, self.env = pid, command, dict(env)
        self.obeys_sigterm = obeys_sigterm
        self.signals: list[int] = []
        self.output: list[bytes] = []
        self._status: int | None = None
        self._ended = threading.Event()

    def exit(self, status: int = 0) -> None:
        if self._status is None:
            self._status = status
            self._ended.set()

    def lines(self) -> Iterator[bytes]:
        self._ended.wait()
        yield from self.output

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise TimeoutError(f"process {self.pid} still running")
        assert self._status is not None
        return self._status

    def poll(self) -> int | None:
        return self._status

    def signal(self, signum: int) -> None:
        import signal

        self.signals.append(signum)
        if signum == signal.SIGKILL or (signum == signal.SIGTERM and self.obeys_sigterm):
            self.exit(-signum)


@dataclass
class FakeSpawn:
    """A Spawn that records every process it starts; `obeys_sigterm` applies to new ones."""

    obeys_sigterm: bool = True
    started: list[FakeProcess] = field(default_factory=list)

    def __call__(self, command: str, env: Mapping[str, str], cwd: str | None = None) -> FakeProcess:
        proc = FakeProcess(100 + len(self.started), command, env, self.obeys_sigterm)
        self.started.append(proc)
        return proc

    def of(self, dyno: str) -> list[FakeProcess]:
        """Every process started as `dyno` (winston.1), oldest first."""
        return [proc for proc in self.started if proc.env.get("DYNO") == dyno]
