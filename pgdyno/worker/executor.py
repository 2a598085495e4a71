"""Runs one claimed job's function, turns what happened into an Outcome, and logs it.

No database access here: the worker records outcomes in batches. Errors are classified once:
a retry can help (any exception from the task) or cannot (unknown task, arguments the function
does not accept, PermanentJobError).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgdyno import tasks
from pgdyno.errors import NotInTask, PermanentJobError, UnknownTask
from pgdyno.logfmt import log_event
from pgdyno.queue import ClaimedJob
from pgdyno.worker import cancels

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000
TRACEBACK_FRAMES = 8


@dataclass(frozen=True, slots=True)
class Outcome:
    job: ClaimedJob
    #: The task's return value as JSON text (None when it returned None or failed).
    result: str | None
    #: "Type: message" plus a trimmed traceback; None on success.
    error: str | None
    #: Whether another attempt could succeed (only meaningful when error is set).
    retryable: bool
    duration_s: float


#: What a running task may report: (job id, progress fields). The worker stores the latest
#: progress of each job and writes it to the job's row on its next turn.
ProgressSink = Callable[[int, dict[str, Any]], None]

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
    database_url: str
    _progress: ProgressSink

    def set_progress(self, **fields: Any) -> None:
        """Publish progress (JSON values), shown by `pgdyno jobs show`; the latest call wins.

        Raises ValueError here, in the task, for values the progress column cannot hold.
        """
        storable_json(fields, "progress")
        self._progress(self.id, fields)

    @property
    def cancel_requested(self) -> bool:
        """True once `pgdyno jobs cancel` (or pgdyno.cancel) asked for this job to stop: return
        or raise soon; the job ends cancelled either way (pgdyno/worker/cancels.py)."""
        return cancels.is_requested(self.worker, self.id)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when this job's cancel is requested (at once if it already was),
        from the worker's loop thread: keep it short (cancel a query, set an event)."""
        cancels.on_cancel(self.worker, self.id, callback)


def current_job() -> JobContext:
    """The job the calling task is running; raises outside a task."""
    job: ClaimedJob | None = getattr(_local, "job", None)
    if job is None:
        raise NotInTask("current_job() was called outside a running pgdyno task")
    worker, database_url, sink = _local.worker
    return JobContext(
        job.id, job.queue, job.task, job.attempts, job.max_attempts, worker, database_url, sink
    )


# An escaped NUL (\u0000) that is not itself an escaped backslash followed by "u0000".
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def storable_json(value: Any, what: str = "result") -> str:
    """`value` as JSON text that a jsonb column accepts; ValueError saying why not otherwise.

    Checked here because the database would refuse the whole batch the worker reports it in:
    NaN and Infinity are not JSON, and jsonb cannot hold the NUL character.
    """
    try:
        text = json.dumps(value, default=str, allow_nan=False)
    except ValueError as exc:  # NaN/Infinity, circular references
        raise ValueError(f"the {what} cannot be stored as JSON: {exc}") from None
    if _JSON_NUL.search(text):
        raise ValueError(
            f"the {what} cannot be stored as JSON: it contains a NUL character "
            "(\\u0000), which Postgres jsonb refuses"
        )
    return text


def describe(exc: BaseException, *, with_traceback: bool = True) -> str:
    """`Type: message`, then the innermost frames of the traceback, trimmed to fit a column."""
    head = f"{type(exc).__name__}: {exc}".strip()
    if not with_traceback or exc.__traceback__ is None:
        return head[:MAX_ERROR_CHARS]
    frames = traceback.format_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
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


def bind_thread(worker: str, database_url: str, progress: ProgressSink) -> None:
    """Tell an executor thread which worker it serves (for current_job())."""
    _local.worker = (worker, database_url, progress)


def run(job: ClaimedJob) -> Outcome:
    """Call the job's task with its args as keyword arguments; never raises."""
    started = time.monotonic()
    _local.job = job
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
                f"{sorted(job.args)}: {mismatch}"
            )
            retryable = False
        else:
            error, retryable = describe(exc), True
    except BaseException as exc:
        error, retryable = describe(exc), True
    else:
        return _succeeded(job, value, started)
    return Outcome(job, None, error, retryable, time.monotonic() - started)


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
            f"as the job's result: {exc}; return JSON-compatible data"
        )
        return Outcome(job, None, error, False, time.monotonic() - started)
    return Outcome(job, result, None, False, time.monotonic() - started)


def log_outcome(outcome: Outcome, retry_in: float | None = None) -> None:
    """One line per finished attempt: job_done, job_retry (in `retry_in` s) or job_failed."""
    job = outcome.job
    fields: dict[str, Any] = {
        "job": job.id,
        "task": job.task,
        "queue": job.queue,
        "attempt": job.attempts,
    }
    duration_ms = round(outcome.duration_s * 1000, 1)
    if outcome.error is None:
        log_event(log, "job_done", **fields, duration_ms=duration_ms)
        return
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
