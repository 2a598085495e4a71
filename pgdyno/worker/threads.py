"""The worker's executor threads.

The loop thread talks to Postgres; `size` executor threads run claimed jobs and queue their
outcomes. A thread that finishes a job while the loop sleeps writes one byte to the wake-up
pipe (pgdyno.clock.Wakeup), so the loop reports it at once, without polling.

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
from queue import SimpleQueue

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
        self._inbox: SimpleQueue[ClaimedJob | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._abandoned = AbandonedThreads(size, wakeup)
        # Jobs submitted and not started yet (id: when submitted, on the loop's clock), and
        # those taken back (worker/ahead.py): a thread skips a job it finds taken back.
        self._lock = threading.Lock()
        self._queued: dict[int, float] = {}
        self._withdrawn: set[int] = set()
        self._busy = 0  # threads running a job

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
        if self.pool == "process" and self.children is not None:
            self.children.start()  # at once: a fork server that cannot start is seen now
        for index in range(self.size):
            thread = threading.Thread(
                target=self._run_forever, name=f"pgdyno-exec-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def submit(self, job: ClaimedJob, at: float = 0.0) -> None:
        """Queue `job` for the next free thread; `at`: when, on the caller's clock."""
        with self._lock:
            self._queued[job.id] = at
        self._inbox.put(job)

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
            self._withdrawn.update(ids)
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
        for _ in self._threads:
            self._inbox.put(None)

    def _run_forever(self) -> None:
        self._bind()
        while (job := self._inbox.get()) is not None:
            with self._lock:
                if job.id in self._withdrawn:
                    self._withdrawn.discard(job.id)
                    continue
                self._queued.pop(job.id, None)
                self._busy += 1
            try:
                self._execute(job)
            finally:
                with self._lock:
                    self._busy -= 1

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
