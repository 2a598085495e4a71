"""Jobs past their timeout in the thread pool: abandoned, asked to stop, and still counted.

A job with a timeout that runs in the thread pool runs on a thread of its own, watched by the
executor thread that took it (worker/threads.py). At the timeout the executor thread:

1. counts the task's thread as abandoned (the worker's loop subtracts `count` from its free
   slots: a thread that still runs keeps its slot of --concurrency, so a client enqueuing jobs
   that outlive their timeout cannot make the worker run more than --concurrency tasks, nor
   open more than that many connections for them);
2. hands the loop the attempt's outcome, a retryable JobTimeout, at once (the job is finished
   or retried by its policy, its lease is free; fencing refuses whatever the abandoned attempt
   would still write);
3. asks the task to stop, as a cancel would (worker/cancels.py: its
   `current_job().cancel_requested` turns True and what it registered with `on_cancel` is
   called, so a report's query is cancelled on the server and its thread returns at once);
4. logs `job_abandoned`, waits until the task's thread returns, then logs
   `abandoned_job_returned`, gives the slot back and wakes the loop to claim again.

A Python thread cannot be stopped from outside: a task that ignores the request runs to its
end, holding its slot (the process pool kills such tasks; a worker that exits takes its
abandoned threads with it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pgdyno.clock import Wakeup
from pgdyno.logfmt import log_event
from pgdyno.queue import ClaimedJob
from pgdyno.worker import cancels, executor
from pgdyno.worker.executor import Outcome

log = logging.getLogger(__name__)

#: The job_abandoned line's msg; ALL_HELD is added when no slot is left.
ABANDONED = "past its timeout: the task was asked to stop; its thread keeps its slot until done"
ALL_HELD = (
    "; every slot is held so: the worker claims nothing until one returns (run tasks that "
    "ignore their timeout with --pool process)"
)


class AbandonedThreads:
    """The task threads of one worker still running jobs given up at their timeout.

    `concurrency`: the worker's, for the log lines; `wakeup`: poked when a thread returns (its
    slot is free again).
    """

    def __init__(self, concurrency: int, wakeup: Wakeup | None = None) -> None:
        self.concurrency = concurrency
        self._wakeup = wakeup
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        """Threads still running an abandoned job: slots the worker may not fill."""
        return self._count

    def run(self, job: ClaimedJob, timeout: float, post: Callable[[Outcome], None]) -> None:
        """Run `job` on a thread of its own and `post` its outcome, or a JobTimeout after
        `timeout` seconds; then, if it timed out, wait until the task really returns (this is
        what holds its slot). Called on an executor thread."""
        box: list[Outcome] = []
        bound = executor.bound_worker()

        def target() -> None:
            if bound is not None:
                executor.bind_thread(*bound)
            box.append(executor.run(job))

        thread = threading.Thread(target=target, name=f"pgdyno-task-{job.id}", daemon=True)
        started = time.monotonic()
        thread.start()
        thread.join(timeout)
        if box:
            post(box[0])
            return
        with self._lock:  # counted before the loop sees the outcome, or it would claim too soon
            self._count += 1
            abandoned = self._count
        worker = bound[0] if bound is not None else ""
        stop_task = cancels.time_out(worker, job.id, job.attempts)
        try:
            error = executor.timed_out(job, timeout, stopped=False)
            post(Outcome(job, None, error, True, time.monotonic() - started))
            log_event(
                log,
                "job_abandoned",
                logging.WARNING,
                job=job.id,
                task=job.task,
                queue=job.queue,
                attempt=job.attempts,
                timeout_s=timeout,
                abandoned=abandoned,
                concurrency=self.concurrency,
                msg=ABANDONED + (ALL_HELD if abandoned >= self.concurrency else ""),
            )
            stop_task()  # a report cancels its query on the server here
            thread.join()
        finally:
            cancels.returned(worker, job.id, job.attempts)
            with self._lock:
                self._count -= 1
                abandoned = self._count
        log_event(
            log,
            "abandoned_job_returned",
            job=job.id,
            task=job.task,
            attempt=job.attempts,
            overran_s=round(time.monotonic() - started - timeout, 3),
            abandoned=abandoned,
        )
        if self._wakeup is not None:
            self._wakeup.poke()  # always: a loop about to sleep must see the free slot
