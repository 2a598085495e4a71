"""Every exception pgdyno raises on purpose, each with a message that says what to do next.

PgdynoError                  anything pgdyno raises on purpose (the CLI prints it, exit 1)
├── ConfigError              a setting, flag, file or task registration is wrong
├── DatabaseUnavailable      Postgres cannot be reached; the loops retry with backoff
├── InvalidJob               the database refused a job (queue, task, args, priority...)
├── JobNotFound              no job has that id
├── ScheduleNotFound         no schedule has that name
├── InvalidJobState          the job exists, the change does not apply to its status
├── JobFailed                pgdyno.result(): the job failed (its error in .error)
├── JobCancelled             pgdyno.result(): the job was cancelled
├── ResultTimeout            pgdyno.result(): the job did not finish in time (a TimeoutError)
├── UnknownTask              the worker has no task under the job's name
├── NotInTask                current_job() called outside a running task
├── PermanentJobError        raised by a task: fail now, do not retry
│   └── InvalidReport        a report cannot run as asked
├── ReportFailed             a report failed on the way; another attempt may succeed
├── NotAReportJob            `pgdyno report show/fetch` of a job that is not a report
├── ResultUnavailable        a report job has no (whole) result to fetch
└── FormationError           a formation backend refused or failed a request
    ├── FormationRejected    401, 403, 404, 422: retrying cannot help
    └── FormationUnavailable unreachable, unanswered, 429 or 5xx (with its Retry-After)
"""

from __future__ import annotations


class PgdynoError(Exception):
    """Base class: anything pgdyno raises on purpose."""


class ConfigError(PgdynoError):
    """A setting is missing or invalid (environment variable, flag, file, task registry)."""


class DatabaseUnavailable(PgdynoError):
    """Postgres cannot be reached; callers retry with backoff."""


class LocalPlatformError(PgdynoError):
    """The local stand-in for Heroku failed at run time: the embedded Postgres could not be
    initialised, started or stopped (its log's tail is in the message), or `pgdyno dev`'s
    release phase exited non-zero."""


class SchemaNotMigrated(DatabaseUnavailable):
    """The database's pgdyno schema is missing or behind this pgdyno's migrations.

    Commands stop with its one-line message (which says to run `pgdyno migrate`); a worker or
    dispatcher started before the release phase finished treats it as "not ready yet" and
    retries with backoff, as for an unreachable database.
    """


class JobNotFound(PgdynoError):
    """No job has that id (it may have been pruned)."""


class ScheduleNotFound(PgdynoError):
    """No schedule has that name."""


class InvalidJobState(PgdynoError):
    """The job exists but the requested change does not apply to its status."""


class JobFailed(PgdynoError):
    """The job whose result was asked for failed: `job_id`, and its stored `error` (the
    exception type, message and traceback of its last attempt)."""

    def __init__(self, job_id: int, error: str | None) -> None:
        self.job_id = job_id
        self.error = error
        first = (error or "no error was recorded").splitlines()[0]
        super().__init__(f"job {job_id} failed: {first}")


class JobCancelled(PgdynoError):
    """The job whose result was asked for was cancelled (before it started, or while it ran):
    `job_id`, and its stored `error` if any."""

    def __init__(self, job_id: int, error: str | None) -> None:
        self.job_id = job_id
        self.error = error
        first = (error or "").splitlines()[0] if error else ""
        super().__init__(f"job {job_id} was cancelled" + (f": {first}" if first else ""))


class ResultTimeout(PgdynoError, TimeoutError):
    """pgdyno.result() gave up: the job had not finished when its timeout passed."""


class InvalidJob(PgdynoError):
    """The database refused a job (bad queue, task, args, priority or attempts)."""


class UnknownTask(PgdynoError):
    """The worker has no task registered under the job's task name."""


class NotInTask(PgdynoError):
    """`current_job()` was called outside a running task (in the worker's loop, or in code
    that is not a task)."""


class PermanentJobError(PgdynoError):
    """Raised by a task when retrying cannot help: the job fails at once, attempts left or not."""


class FormationError(PgdynoError):
    """A formation backend (Heroku API, local platform) refused or failed a request."""


class FormationRejected(FormationError):
    """The platform refused the request (401, 403, 404, 422): retrying cannot help."""

    def __init__(self, status: int, error_id: str, message: str, hint: str = "") -> None:
        self.status = status
        self.error_id = error_id
        text = f"{status} {error_id}: {message}"
        super().__init__(f"{text}; {hint}" if hint else text)


class FormationUnavailable(FormationError):
    """The platform could not be reached, did not answer, or answered 429 or 5xx: whether a
    PATCH was applied is unknown. `retry_after`: seconds the platform asked to wait
    (Retry-After), or None."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidReport(PermanentJobError):
    """A report cannot run as asked (unknown name, bad parameters, a file that is not one
    read-only query): retrying cannot help, so the job fails at once.

    `public`: the message for the job's row, which clients read back: without the reports
    folder's path or the names of other reports (the full message goes to the worker's log).
    """

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = message if public is None else public


class ReportFailed(PgdynoError):
    """A report failed on the way (connection lost, upload refused by a busy server): another
    attempt may succeed."""


class NotAReportJob(PgdynoError):
    """A report command was given the id of a job that runs another task."""


class ResultUnavailable(PgdynoError):
    """The report job has no result to fetch (yet): still waiting, running, failed, stored
    elsewhere, or truncated."""
