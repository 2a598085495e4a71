"""Runs one claimed job's function and turns what happened into an Outcome.

No database access here: the worker records outcomes in batches. Errors are classified once:
a retry can help (any exception from the task) or cannot (unknown task, arguments the function
does not accept, PermanentJobError).
"""

from __future__ import annotations

import inspect
import json
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgdyno import tasks
from pgdyno.errors import PermanentJobError, PgdynoError, UnknownTask
from pgdyno.queue import ClaimedJob

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
        """Publish progress (JSON values), shown by `pgdyno jobs show`; the latest call wins."""
        self._progress(self.id, fields)


def current_job() -> JobContext:
    """The job the calling task is running; raises outside a task."""
    job: ClaimedJob | None = getattr(_local, "job", None)
    if job is None:
        raise PgdynoError("current_job() was called outside a running pgdyno task")
    worker, database_url, sink = _local.worker
    return JobContext(job.id, job.queue, job.task, job.attempts, job.max_attempts, worker,
                      database_url, sink)


def describe(exc: BaseException, *, with_traceback: bool = True) -> str:
    """`Type: message`, then the innermost frames of the traceback, trimmed to fit a column."""
    head = f"{type(exc).__name__}: {exc}".strip()
    if not with_traceback or exc.__traceback__ is None:
        return head[:MAX_ERROR_CHARS]
    frames = traceback.format_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    text = head + "\nTraceback (innermost last):\n" + "".join(frames)
    return text[:MAX_ERROR_CHARS]


def _arguments_mismatch(fn: object, args: dict) -> str | None:
    """Why `fn` cannot be called with `args`, or None if it can."""
    try:
        inspect.signature(fn).bind(**args)  # type: ignore[arg-type]
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
        result = None if value is None else json.dumps(value, default=str)
        return Outcome(job, result, None, False, time.monotonic() - started)
    except (UnknownTask, PermanentJobError) as exc:
        error, retryable = describe(exc, with_traceback=False), False
    except TypeError as exc:
        mismatch = _arguments_mismatch(tasks.lookup(job.task), job.args)
        if mismatch is not None:
            error = (f"InvalidArguments: task {job.task!r} cannot take args "
                     f"{sorted(job.args)}: {mismatch}")
            retryable = False
        else:
            error, retryable = describe(exc), True
    except BaseException as exc:
        error, retryable = describe(exc), True
    return Outcome(job, None, error, retryable, time.monotonic() - started)
