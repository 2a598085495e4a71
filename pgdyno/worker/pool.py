"""The process pool: each job in a child process of its own (`pgdyno worker --pool process`).

Why a fresh process per job, not a recycled pool: a heavy job (a report) leaves the Python
heap fragmented and grown, and a recycled process keeps that memory; a process that exits
gives it all back to the operating system. A crash (segfault, os._exit, the OOM killer) takes
only that job, and a job past its timeout or its memory limit can really be stopped (SIGKILL).
The worker's loop, with its heartbeats, lives in another process than the task, so a task that
holds the GIL for minutes cannot starve the leases.

Why a fork server: forking the worker itself would copy its threads' state and its open
psycopg connections into the child (a child that closed them would end the worker's sessions).
multiprocessing's "forkserver" start method forks each child from a clean single-threaded
server process started once, which has already imported pgdyno and the task modules (its
`preload`): a child starts in a few milliseconds, with no connection and no thread.

Each running child is watched by the executor thread that started it (worker/threads.py): it
reads the child's pipe (its task's start, progress, the outcome), samples its memory every
SAMPLE_INTERVAL seconds (worker/memory.py) and kills it past its timeout (counted from its
task's start: a cold fork server importing the task modules costs the job nothing) or memory
limit. `stop(job_id, error)`
stops one job's child from any thread (a lost lease; issue 13's cancel of a running job uses
it too); `stop_all()` kills them all when the worker hands its jobs back and exits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING

from pgdyno import tasks
from pgdyno.logfmt import log_event
from pgdyno.queue import ClaimedJob
from pgdyno.worker import executor, memory
from pgdyno.worker.executor import Outcome, ProgressSink
from pgdyno.worker.storable import storable_text

if TYPE_CHECKING:
    from multiprocessing import connection
    from multiprocessing.context import ForkServerContext
    from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)

#: Seconds between two memory samples of a running job process (and the longest it takes to
#: notice a stop request).
SAMPLE_INTERVAL = 0.1
#: Seconds a job process may take, once forked, to start its task (its timeout counts from
#: there): past it, it is stopped and its job retried (JobCrashed).
START_LIMIT_S = 60.0


class _Child:
    """One running job process, and why the worker stopped it (None: it was not stopped)."""

    def __init__(self, process: BaseProcess) -> None:
        self.process = process
        self.stopped: tuple[str, bool, bool] | None = None  # (error, retryable, handed back)

    def kill(self, error: str, retryable: bool, handed_back: bool = False) -> None:
        if self.stopped is None:
            self.stopped = (error, retryable, handed_back)
        # No exitcode check here: it would read the exit status the watching thread waits for.
        if self.process.pid is not None:
            self.process.kill()  # SIGKILL: the job process ignores SIGTERM


class ChildProcesses:
    """Runs jobs in child processes forked from a fork server; one `run` per executor thread.

    `worker`, `database_url`: what current_job() tells the task; `memory_limit`: bytes a job's
    process may reach (resident) before it is stopped with JobMemoryExceeded (None: no limit);
    `progress`: where the tasks' progress goes (the worker loop).
    """

    def __init__(
        self,
        *,
        worker: str,
        database_url: str,
        memory_limit: int | None,
        progress: ProgressSink,
        log_level: str = "INFO",
    ) -> None:
        self.worker = worker
        self.memory_limit = memory_limit
        self._database_url = database_url
        self._progress = progress
        self._log_level = log_level
        # multiprocessing (pickle, the fork server) is imported by start(), on the first job
        # that runs in a process: a worker whose jobs all run in threads never pays for it.
        self._context: ForkServerContext | None = None
        self._children: dict[int, _Child] = {}
        self._lock = threading.Lock()

    def start(self) -> ForkServerContext:
        """Start the fork server (idempotent), preloading pgdyno and the task modules; returns
        the multiprocessing context that starts the job processes."""
        with self._lock:
            if self._context is not None:
                return self._context
            import multiprocessing
            from multiprocessing import forkserver

            context = multiprocessing.get_context("forkserver")
            # multiprocessing runs the worker's main script again in each child (as
            # __mp_main__): for the `pgdyno` console script that imports pgdyno's whole CLI,
            # 180 ms a job unless the fork server has imported it already. (A script of your
            # own that starts a worker must do it under `if __name__ == "__main__":`, as any
            # multiprocessing program.)
            # The built-in tasks' work too (the report runner), which the worker's own
            # process imports only when a job needs it (reports/task.py).
            context.set_forkserver_preload(
                [
                    "pgdyno.cli",
                    "pgdyno.worker.forkserver_init",
                    "pgdyno.worker.child",
                    *tasks.imported_modules(),
                    "pgdyno.reports.runner",
                ]
            )
            forkserver.ensure_running()
            self._context = context
        log_event(
            log,
            "job_processes_ready",
            worker=self.worker,
            max_job_memory_mib=None if self.memory_limit is None else self.memory_limit >> 20,
        )
        return context

    def run(self, job: ClaimedJob, timeout: float | None) -> Outcome:
        """Run `job` in a child process; returns its outcome (never raises)."""
        from pgdyno.worker import child

        context = self.start()
        started = time.monotonic()
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=child.main,
            args=(job, self.worker, self._database_url, writer, self._log_level),
            name=f"pgdyno-job-{job.id}",
        )
        try:
            process.start()
        except Exception as exc:
            reader.close()
            error = f"JobCrashed: the job's process could not start: {executor.describe(exc)}"
            return Outcome(job, None, storable_text(error), True, time.monotonic() - started)
        finally:
            writer.close()
        running = _Child(process)
        with self._lock:
            self._children[job.id] = running
        try:
            sent, peak, task_started = self._watch(job, running, reader, timeout)
        finally:
            process.join()
            reader.close()
            with self._lock:
                self._children.pop(job.id, None)
        # A job stopped or crashed: its duration counts from its task's start, if it started.
        duration = time.monotonic() - (started if task_started is None else task_started)
        return self._outcome(job, running, sent, peak, duration)

    def _watch(
        self,
        job: ClaimedJob,
        running: _Child,
        reader: connection.Connection,
        timeout: float | None,
    ) -> tuple[tuple[object, ...] | None, int | None, float | None]:
        """Follow the child until it exits: relay its progress, keep its outcome message, and
        kill it past its timeout (counted from the moment its task starts: the fork server's
        and the process's own start do not count), past START_LIMIT_S without starting its
        task, or over its memory limit. The clock is read at every turn, so a task sending
        progress without pause is stopped like any other. Returns (outcome message, peak RSS,
        monotonic time its task started or None)."""
        from multiprocessing import connection

        process = running.process
        start_deadline = time.monotonic() + START_LIMIT_S
        task_started: float | None = None
        deadline: float | None = None
        next_sample = 0.0
        sent: tuple[object, ...] | None = None
        peak: int | None = None
        open_pipe = True
        while True:
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + SAMPLE_INTERVAL
                usage = memory.usage(process.pid) if process.pid is not None else None
                if usage is not None:
                    peak = max(peak or 0, usage.peak)
                    if self.memory_limit is not None and usage.rss > self.memory_limit:
                        running.kill(self._too_big(job, usage.peak), False)
            if running.stopped is None:
                if task_started is None and now >= start_deadline:
                    running.kill(not_started(job), True)
                elif timeout is not None and deadline is not None and now >= deadline:
                    running.kill(executor.timed_out(job, timeout, stopped=True), True)
            due = next_sample  # the start limit is checked with the samples
            if deadline is not None and running.stopped is None:
                due = min(due, deadline)
            wait = max(0.0, due - now)
            ready = connection.wait([process.sentinel, *([reader] if open_pipe else [])], wait)
            if open_pipe and reader in ready:
                try:
                    message = reader.recv()
                except (EOFError, OSError):
                    open_pipe = False
                    continue
                if message[0] == "started" and task_started is None:
                    task_started = time.monotonic()
                    deadline = None if timeout is None else task_started + timeout
                elif message[0] == "progress":
                    self._progress(job.id, int(message[1]), str(message[2]))
                elif message[0] == "outcome":
                    sent = message
                continue  # read everything the child sent before looking at its exit
            if process.sentinel in ready:
                return sent, peak, task_started

    def _too_big(self, job: ClaimedJob, peak: int) -> str:
        return (
            f"JobMemoryExceeded: task {job.task!r} used {memory.mib(peak)} (peak RSS of its "
            f"process), over the limit of {memory.mib(self.memory_limit)} per job; its process "
            "was stopped. Give jobs more with --max-job-memory (PGDYNO_MAX_JOB_MEMORY), a "
            "lower --concurrency or a bigger dyno"
        )

    def _outcome(
        self,
        job: ClaimedJob,
        running: _Child,
        sent: tuple[object, ...] | None,
        peak: int | None,
        duration: float,
    ) -> Outcome:
        # An outcome sent before the process was stopped wins: the job had finished.
        if sent is None and running.stopped is not None:
            stop_error, stop_retryable, handed_back = running.stopped
            return Outcome(job, None, stop_error, stop_retryable, duration, peak, handed_back)
        if sent is not None:
            _, result, error, retryable, took, child_peak = sent
            if isinstance(child_peak, int):
                peak = max(peak or 0, child_peak)
            return Outcome(
                job,
                result if isinstance(result, str) else None,
                error if isinstance(error, str) else None,
                bool(retryable),
                float(took) if isinstance(took, int | float) else duration,
                peak,
            )
        return Outcome(job, None, crashed(job, running.process.exitcode), True, duration, peak)

    def stop(self, job_id: int, error: str, retryable: bool = False) -> bool:
        """Stop the process running `job_id` (from any thread); its outcome is the failure
        `error`. False when no process of this pool runs that job."""
        with self._lock:
            running = self._children.get(job_id)
        if running is None:
            return False
        running.kill(error, retryable)
        return True

    def stop_all(self) -> list[int]:
        """Kill every running job process to hand its job back, wait until they are gone;
        returns their job ids. Each one's outcome is marked `handed_back` (nothing to record),
        unless the job finished before it was stopped."""
        with self._lock:
            stopped = list(self._children.items())
        if not stopped:
            return []
        from multiprocessing import connection

        running = [each for _, each in stopped]
        for each in running:
            each.kill("JobStopped: the worker handed the job back", True, handed_back=True)
        # Wait on the exit sentinels, not join(): their watching threads reap them.
        pending = [each.process.sentinel for each in running]
        deadline = time.monotonic() + 5
        while pending and time.monotonic() < deadline:
            ready = connection.wait(pending, deadline - time.monotonic())
            pending = [sentinel for sentinel in pending if sentinel not in ready]
        return [job_id for job_id, _ in stopped]


def not_started(job: ClaimedJob) -> str:
    """The error of a job whose process did not start its task within START_LIMIT_S."""
    return (
        f"JobCrashed: the process for task {job.task!r} (attempt {job.attempts}) did not start "
        f"the task within {START_LIMIT_S:g} s of being forked; it was stopped"
    )


def crashed(job: ClaimedJob, exitcode: int | None) -> str:
    """The error of a job whose process ended without an outcome."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"died of signal {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"died of signal {-exitcode}"
    else:
        how = f"exited with status {exitcode} before reporting an outcome"
    return (
        f"JobCrashed: the process running task {job.task!r} (attempt {job.attempts}) {how}; "
        "the other jobs of the worker were not affected"
    )
