"""Runs one claimed job's function, turns what happened into an Outcome, and logs it.

No database access here: the worker records outcomes in batches. Errors are classified once:
a retry can help (any exception from the task) or cannot (unknown task, arguments the function
does not accept, PermanentJobError). Whatever the task returns or raises, `run` returns an
Outcome the database accepts (worker/storable.py) and never raises: an outcome that cannot be
stored as it is fails the job with `UnstorableResult`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pgdyno import logfmt, tasks
from pgdyno.errors import NotInTask, PermanentJobError, UnknownTask
from pgdyno.logfmt import format_value, log_event
from pgdyno.queue import MAX_ERROR_CHARS as MAX_ERROR_CHARS  # one limit, queue.fail's
from pgdyno.queue import ClaimedJob
from pgdyno.worker import cancels
from pgdyno.worker.storable import (
    MAX_PROGRESS_BYTES,
    exception_text,
    storable_json,
    storable_text,
    unreadable,
    unstorable,
)

log = logging.getLogger(__name__)

TRACEBACK_FRAMES = 8


class Outcome(NamedTuple):  # a tuple: built once per job, 1 µs against 6 for a frozen dataclass
    job: ClaimedJob
    #: The task's return value as JSON text (None when it returned None or failed).
    result: str | None
    #: "Type: message" plus a trimmed traceback; None on success.
    error: str | None
    #: Whether another attempt could succeed (only meaningful when error is set).
    retryable: bool
    duration_s: float
    #: Peak resident memory of the job's own process (process pool only), in bytes.
    peak_rss_bytes: int | None = None
    #: The worker stopped the job's process to hand the job back: nothing to record.
    handed_back: bool = False
    #: Its job_done line, rendered by the executor thread that ran the job while INFO lines
    #: are on (the loop thread then only adds it to the log batch); None: rendered when logged.
    line: str | None = None


#: What a running task may report: (job id, attempt, progress as JSON text). The worker keeps
#: the latest progress of each job and writes it to the job's row on its next turn, if it still
#: holds that attempt.
ProgressSink = Callable[[int, int, str], None]

_local = threading.local()


@dataclass(frozen=True)
class JobContext:
    """What a running task knows about its job (see current_job())."""

    id: int
    queue: str
    task: str
    attempt: int
    max_attempts: int
    #: The worker's id, e.g. winston.1:4242:9f3a.
    worker: str
    #: Left out of repr(): it holds the database password (a task printing its context would
    #: put it in logs and in the job's last_error).
    database_url: str = field(repr=False)
    _progress: ProgressSink = field(repr=False)

    def set_progress(self, **fields: Any) -> None:
        """Publish progress (JSON values), shown by `pgdyno jobs show`; the latest call wins.

        Raises ValueError here, in the task, for values the progress column cannot hold (see
        worker/storable.py; at most 64 KiB of JSON).
        """
        self._progress(self.id, self.attempt, storable_json(fields, "progress", MAX_PROGRESS_BYTES))

    @property
    def cancel_requested(self) -> bool:
        """True once `pgdyno jobs cancel` (or pgdyno.cancel) asked for this job to stop, or this
        attempt ran past its timeout in the thread pool: return or raise soon; the job ends
        cancelled, or timed out, either way (pgdyno/worker/cancels.py, worker/abandoned.py)."""
        return cancels.is_requested(self.worker, self.id, self.attempt)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when this job's cancel is requested or this attempt's timeout passes
        in the thread pool (at once if it already did), from one of the worker's threads: keep
        it short (cancel a query, set an event)."""
        cancels.on_cancel(self.worker, self.id, callback, self.attempt)


def current_job() -> JobContext:
    """The job the calling task is running; raises outside a task."""
    job: ClaimedJob | None = getattr(_local, "job", None)
    if job is None:
        raise NotInTask("current_job() was called outside a running pgdyno task")
    worker, database_url, sink = _local.worker
    return JobContext(
        job.id, job.queue, job.task, job.attempts, job.max_attempts, worker, database_url, sink
    )


def describe(exc: BaseException, *, with_traceback: bool = True) -> str:
    """`Type: message`, then the innermost frames of the traceback, trimmed to fit a column.

    Never raises, even for an exception whose __str__ does; the text may still hold characters
    a text column refuses (see `_failed`)."""
    head = exception_text(exc)
    if not with_traceback or exc.__traceback__ is None:
        return head[:MAX_ERROR_CHARS]
    try:
        frames = traceback.format_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    except Exception:  # a frame whose source line cannot be read, say
        frames = ["  (the traceback could not be formatted)\n"]
    text = head + "\nTraceback (innermost last):\n" + "".join(frames)
    return text[:MAX_ERROR_CHARS]


def _arguments_mismatch(fn: Callable[..., Any], args: dict[str, Any]) -> str | None:
    """Why `fn` cannot be called with `args`, or None if it can."""
    try:
        inspect.signature(fn).bind(**args)
    except TypeError as exc:
        return str(exc)
    except ValueError:
        return None
    return None


def _names(args: dict[str, Any], shown: int = 10) -> str:
    """The first `shown` argument names, sorted: a client may send thousands."""
    keys = sorted(args)
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return "[" + ", ".join(map(repr, keys[:shown])) + more + "]"


def bind_thread(worker: str, database_url: str, progress: ProgressSink) -> None:
    """Tell an executor thread which worker it serves (for current_job())."""
    _local.worker = (worker, database_url, progress)


def bound_worker() -> tuple[str, str, ProgressSink] | None:
    """What bind_thread told the calling thread: (worker, database_url, progress), or None."""
    bound: tuple[str, str, ProgressSink] | None = getattr(_local, "worker", None)
    return bound


def run(job: ClaimedJob) -> Outcome:
    """Call the job's task with its args as keyword arguments; never raises."""
    started = time.monotonic()
    _local.job = job
    if job.args_error is not None:  # args no JSON client can decode: this job fails alone
        return Outcome(job, None, job.args_error, False, time.monotonic() - started)
    try:
        return _run(job, started)
    except BaseException as exc:  # a last resort: no outcome may be lost
        error = f"UnstorableResult: the outcome of task {job.task!r} could not be recorded"
        return Outcome(
            job,
            None,
            storable_text(f"{error}: {describe(exc)}", MAX_ERROR_CHARS),
            True,
            time.monotonic() - started,
        )


def _run(job: ClaimedJob, started: float) -> Outcome:
    try:
        fn = tasks.lookup(job.task)
        value = fn(**job.args)
    except (UnknownTask, PermanentJobError) as exc:
        error, retryable = describe(exc, with_traceback=False), False
    except TypeError as exc:
        mismatch = _arguments_mismatch(tasks.lookup(job.task), job.args)
        if mismatch is not None:
            error = (
                f"InvalidArguments: task {job.task!r} cannot take args "
                f"{_names(job.args)}: {mismatch}"
            )
            retryable = False
        else:
            error, retryable = describe(exc), True
    except BaseException as exc:
        error, retryable = describe(exc), True
        if unreadable(exc):
            error = "UnstorableResult: the task's exception has no readable message; " + error
    else:
        return _succeeded(job, value, started)
    return _failed(job, error, retryable, started)


def _failed(job: ClaimedJob, error: str, retryable: bool, started: float) -> Outcome:
    """The outcome of a failed attempt; an error text a text column would refuse (a NUL, a lone
    surrogate) is kept, escaped, after an `UnstorableResult` prefix, with the same retry
    policy."""
    if unstorable(error):
        error = storable_text(
            "UnstorableResult: the task's error cannot be stored as it is (it holds a NUL "
            "character or a lone surrogate); escaped: " + error,
            MAX_ERROR_CHARS,
        )
    return Outcome(job, None, error[:MAX_ERROR_CHARS], retryable, time.monotonic() - started)


def _succeeded(job: ClaimedJob, value: Any, started: float) -> Outcome:
    """The outcome of a task that returned `value`: done, unless the value cannot be stored.

    Such a job fails without retry: it ran, and running it again would repeat its effects only
    to return the same unstorable value.
    """
    try:
        result = None if value is None else storable_json(value)
    except ValueError as exc:
        error = (
            f"UnstorableResult: task {job.task!r} returned a value that cannot be stored "
            f"as the job's result: {exc}"
        )
        return Outcome(
            job, None, storable_text(error, MAX_ERROR_CHARS), False, time.monotonic() - started
        )
    duration = time.monotonic() - started
    # The line is rendered here, in the executor thread, which runs while the loop thread waits
    # for Postgres: the loop's turn (the worker's critical path) only adds it to the batch.
    line = done_line(job, duration) if log.isEnabledFor(logging.INFO) else None
    return Outcome(job, result, None, False, duration, None, False, line)


def timed_out(job: ClaimedJob, timeout: float, *, stopped: bool) -> str:
    """The JobTimeout error of an attempt that ran past its timeout."""
    what = (
        "its process was stopped"
        if stopped
        else "it was abandoned (a thread cannot be stopped: the task was asked to stop, and "
        "its slot stays taken until it returns; use --pool process to stop such tasks)"
    )
    return (
        f"JobTimeout: task {job.task!r} ran longer than its timeout of {timeout:g} s in "
        f"attempt {job.attempts}; {what}"
    )


def log_done(outcomes: list[Outcome]) -> None:
    """The job_done lines of `outcomes` (attempts that succeeded), in order: what log_outcome
    writes for each, but rendered here a turn at a time into the worker's log batch (one lock,
    no LogRecord, no generic field loop: 1-2 µs a line instead of ~6 on a quiet machine). Off
    at WARNING; outside the worker's batching (an application's own logging), log_outcome."""
    if not outcomes:
        return
    handler = logfmt.batch_handler(log)
    if handler is None:
        for outcome in outcomes:
            log_outcome(outcome)
        return
    handler.add_lines(
        [outcome.line or done_line(outcome.job, outcome.duration_s) for outcome in outcomes]
    )


def done_line(job: ClaimedJob, duration_s: float) -> str:
    """`at=info event=job_done job=.. task=.. queue=.. attempt=.. duration_ms=..`: the line
    log_event renders for log_outcome's fields (tests/unit/test_logfmt.py checks both agree),
    with the task and queue part formatted once per pair."""
    job_id, attempt, task, queue = job.id, job.attempts, job.task, job.queue
    ms = duration_s * 1000
    if not (
        type(job_id) is int
        and type(attempt) is int
        and type(task) is str
        and type(queue) is str
        and 0.0 <= ms < 1e12  # format_value's digits exactly (and no NaN)
    ):
        return "at=info " + logfmt.render("job_done", _done_fields(job, duration_s))
    # round(ms, 1) through format_value's "%.3f", zeros and point stripped, is this text:
    # both round the exact binary value to one decimal.
    duration = f"{ms:.1f}"
    if duration.endswith(".0"):
        duration = duration[:-2]
    names = _task_and_queue(task, queue)
    return f"at=info event=job_done job={job_id}{names} attempt={attempt} duration_ms={duration}"


@functools.lru_cache(maxsize=1024)
def _task_and_queue(task: str, queue: str) -> str:
    return f" task={format_value(task)} queue={format_value(queue)}"


def _done_fields(job: ClaimedJob, duration_s: float) -> dict[str, Any]:
    return {
        "job": job.id,
        "task": job.task,
        "queue": job.queue,
        "attempt": job.attempts,
        "duration_ms": round(duration_s * 1000, 1),
    }


def log_outcome(outcome: Outcome, retry_in: float | None = None) -> None:
    """One line per finished attempt: job_done, job_retry (in `retry_in` s) or job_failed."""
    if outcome.error is None and not log.isEnabledFor(logging.INFO):
        return  # job_done is off (PGDYNO_LOG_LEVEL=WARNING): not even its fields are built
    if outcome.error is None:
        log_event(log, "job_done", **_done_fields(outcome.job, outcome.duration_s))
        return
    job = outcome.job
    fields: dict[str, Any] = {
        "job": job.id,
        "task": job.task,
        "queue": job.queue,
        "attempt": job.attempts,
    }
    duration_ms = round(outcome.duration_s * 1000, 1)
    log_event(
        log,
        "job_failed" if retry_in is None else "job_retry",
        logging.WARNING if retry_in is None else logging.INFO,
        **fields,
        max_attempts=job.max_attempts,
        retry_in_s=round(retry_in, 3) if retry_in else None,
        duration_ms=duration_ms,
        error=outcome.error.splitlines()[0] if outcome.error else "",
    )
