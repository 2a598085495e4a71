"""The worker's executor threads.

The loop thread talks to Postgres; up to `size` executor threads run claimed jobs and queue
their outcomes. A thread that finishes a job while the loop sleeps writes one byte to the
wake-up pipe (pgdyno.clock.Wakeup), so the loop reports it at once, without polling.

Threads are woken, and started, only as needed: while jobs wait in the inbox, one thread that
runs no job stays awake to take the next one (a thread that takes a job and leaves others
waiting wakes, or starts, another first). So a job never waits behind a running one while a
slot is free (a heavy job is never ahead of a waiting one in the same thread), yet a batch of
short jobs is run by the few threads that are awake, one after the other, instead of waking a
thread per job (each wake-up is a hand-off of the GIL and a context switch: 24 against 4 µs a
job at --concurrency 300 in bench/PROFILE.md), and a worker whose jobs are short starts a
handful of threads, not `size`.

Where a job runs is decided per job: in the executor thread itself (the thread pool, the
default), or in a child process the executor thread watches (the process pool, worker/pool.py:
`--pool process`, or a task declared with `pool="process"`). A job with a timeout (its own or
its task's) that runs in the thread pool runs on a thread of its own, abandoned at the timeout
and asked to stop; its executor thread waits until it returns, and the slot stays taken until
then (worker/abandoned.py). One in the process pool is killed at the timeout.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from pgdyno import tasks
from pgdyno.clock import Wakeup
from pgdyno.config import Settings
from pgdyno.logfmt import log_event
from pgdyno.queue import ClaimedJob
from pgdyno.tasks import Pool
from pgdyno.worker import executor, memory
from pgdyno.worker.abandoned import AbandonedThreads
from pgdyno.worker.executor import Outcome, ProgressSink
from pgdyno.worker.pool import ChildProcesses
from pgdyno.worker.storable import storable_text

log = logging.getLogger(__name__)


class ExecutorPool:
    """`size` daemon threads running claimed jobs; outcomes land in `outcomes`.

    `pool`: where jobs run by default ("thread" or "process"); `children`: the process pool,
    needed when `pool` is "process" or a task asks for it (started lazily then).
    """

    def __init__(
        self,
        size: int,
        wakeup: Wakeup,
        bind: Callable[[], None],
        *,
        pool: Pool = "thread",
        children: ChildProcesses | None = None,
    ) -> None:
        self.size = size
        self.pool = pool
        self.children = children
        self.outcomes: deque[Outcome] = deque()
        self._wakeup = wakeup
        self._bind = bind
        self._threads: list[threading.Thread] = []
        self._abandoned = AbandonedThreads(size, wakeup)
        # The inbox: jobs submitted and not started yet, in order, and when each was submitted
        # (id: the loop's clock). Threads wait on `_ready` for a job when they run none.
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._inbox: deque[ClaimedJob] = deque()
        self._queued: dict[int, float] = {}
        self._busy = 0  # threads running a job
        self._pulling = 0  # threads awake (or woken) that run no job: they take the next one
        self._waiting = 0  # threads waiting on _ready, not woken yet
        self._started = False
        self._stopping = False

    @property
    def abandoned(self) -> int:
        """Threads still running jobs abandoned at their timeout: each keeps its slot, so the
        worker claims at most `size` minus this many jobs (worker/abandoned.py)."""
        return self._abandoned.count

    @classmethod
    def for_worker(
        cls,
        settings: Settings,
        worker: str,
        database_url: str,
        wakeup: Wakeup,
        progress: ProgressSink,
    ) -> ExecutorPool:
        """The pool of a Worker: its concurrency, its --pool, job processes limited to
        --max-job-memory (default: a share of the dyno's memory, worker/memory.py)."""
        children = ChildProcesses(
            worker=worker,
            database_url=database_url,
            memory_limit=settings.max_job_memory or memory.default_job_limit(settings.concurrency),
            progress=progress,
            log_level=settings.log_level,
        )
        return cls(
            settings.concurrency,
            wakeup,
            bind=lambda: executor.bind_thread(worker, database_url, progress),
            pool="process" if settings.pool == "process" else "thread",
            children=children,
        )

    def start(self) -> None:
        """Start taking jobs. Threads start with the first jobs submitted (as many as needed)."""
        if self.pool == "process" and self.children is not None:
            self.children.start()  # at once: a fork server that cannot start is seen now
        with self._lock:
            self._started = True
            thread = self._wake_one_locked() if self._inbox else None
        if thread is not None:
            thread.start()

    def submit(self, job: ClaimedJob, at: float = 0.0) -> None:
        """Queue `job` for the next free thread; `at`: when, on the caller's clock."""
        self.submit_all([job], at)

    def submit_all(self, jobs: list[ClaimedJob], at: float = 0.0) -> None:
        """Queue `jobs`, in order, for the next free threads; `at`: when, on the caller's
        clock. Wakes (or starts) one thread if none is awake to take them."""
        with self._lock:
            for job in jobs:
                self._queued[job.id] = at
            self._inbox.extend(jobs)
            thread = self._wake_one_locked() if jobs else None
        if thread is not None:
            thread.start()

    def _wake_one_locked(self) -> threading.Thread | None:
        """With jobs waiting and no thread awake to take them: wake a waiting thread, or, when
        none waits and fewer than `size` exist, return a new one for the caller to start
        (outside the lock). Call with the lock held."""
        if self._pulling > 0 or not self._started or self._stopping:
            return None
        if self._waiting > 0:
            self._waiting -= 1
            self._pulling += 1  # counted now: no second wake-up is sent for the same need
            self._ready.notify(1)
            return None
        if len(self._threads) >= self.size:
            return None  # every thread runs a job: the first to finish takes the next
        self._pulling += 1
        thread = threading.Thread(
            target=self._run_forever, name=f"pgdyno-exec-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        return thread

    def queued(self) -> int:
        """Jobs submitted that no thread has started yet."""
        return len(self._queued)

    def oldest_queued(self) -> float | None:
        """When the longest-waiting job not started yet was submitted (the loop's clock), if
        more jobs wait than threads are free to start them; None otherwise."""
        with self._lock:
            if len(self._queued) <= self.size - self._busy:
                return None
            return min(self._queued.values(), default=None)

    def withdraw_queued(self) -> list[int]:
        """Take back every job not started yet: no thread will run them. Returns their ids."""
        with self._lock:
            ids = list(self._queued)
            self._inbox.clear()
            self._queued.clear()
        return ids

    def stop_job(self, job_id: int, error: str, retryable: bool = False) -> bool:
        """Stop job `job_id` now, its outcome being the failure `error` (safe from any thread).

        Only a job running in a child process can be stopped: True then. A job running in a
        thread cannot (False): its task must return by itself (issue 13's cancel asks it to).
        """
        return self.children is not None and self.children.stop(job_id, error, retryable)

    def stop_all(self) -> list[int]:
        """Kill every job running in a child process (the worker hands them back); returns
        their ids (their outcomes follow in `outcomes`, marked handed_back)."""
        return [] if self.children is None else self.children.stop_all()

    def stop(self) -> None:
        """Let idle threads exit and kill job processes; a thread still running a job (an
        abandoned one too) dies with the process."""
        self.stop_all()
        if self.abandoned:
            log_event(log, "abandoned_threads_stopped", abandoned=self.abandoned)
        with self._lock:
            self._stopping = True
            self._pulling += self._waiting  # each wakes, finds the pool stopping and exits
            self._waiting = 0
            self._ready.notify_all()

    def _run_forever(self) -> None:
        self._bind()
        finished = False
        while (job := self._take(finished)) is not None:
            try:
                self._execute(job)
            except BaseException:
                with self._lock:
                    self._busy -= 1
                    self._pulling += 1
                raise
            finished = True  # counted free in _take, under the lock it takes anyway

    def _take(self, finished: bool = False) -> ClaimedJob | None:
        """The next job for the calling thread (counted in `_pulling`), waiting for one if the
        inbox is empty; None once the pool stops. `finished`: the thread has just finished a
        job (it is free again: counted here, in the same hold of the lock). Before it returns
        a job with others still waiting, it makes sure another thread is awake to take them
        (or starts one)."""
        thread = None
        with self._lock:
            if finished:
                self._busy -= 1
                self._pulling += 1  # free again: takes the next job, or waits for one
            while not self._inbox:
                if self._stopping:
                    self._pulling -= 1
                    return None
                self._pulling -= 1
                self._waiting += 1
                self._ready.wait()  # woken by _wake_one_locked (which counted it as pulling)
            job = self._inbox.popleft()
            self._queued.pop(job.id, None)
            self._pulling -= 1
            self._busy += 1
            if self._inbox:
                thread = self._wake_one_locked()
        if thread is not None:
            thread.start()
        return job

    def _post(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self._wakeup.poke_if_sleeping()

    def _execute(self, job: ClaimedJob) -> None:
        """Run `job` where it belongs and post its outcome; never raises, so no job can end
        this thread. Returns once the job's task has returned (or its process has ended)."""
        posted = False

        def post(outcome: Outcome) -> None:
            nonlocal posted
            posted = True
            self._post(outcome)

        try:
            options = tasks.options(job.task)
            timeout = job.timeout if job.timeout is not None else options.timeout
            if (options.pool or self.pool) == "process" and self.children is not None:
                post(self.children.run(job, timeout))
            elif timeout is not None:
                self._abandoned.run(job, timeout, post)
            else:
                post(executor.run(job))
        except BaseException as exc:  # a bug of ours: fail the job, keep the thread
            if not posted:
                error = f"JobCrashed: the worker could not run the job: {executor.describe(exc)}"
                post(Outcome(job, None, storable_text(error, executor.MAX_ERROR_CHARS), True, 0.0))
