"""The exceptions pgdyno raises, each with a message that says what to do next."""

from __future__ import annotations


class PgdynoError(Exception):
    """Base class: anything pgdyno raises on purpose."""


class ConfigError(PgdynoError):
    """A setting is missing or invalid (environment variable, flag, file)."""


class DatabaseUnavailable(PgdynoError):
    """Postgres cannot be reached; callers retry with backoff."""


class SchemaNotMigrated(DatabaseUnavailable):
    """The database's pgdyno schema is missing or behind this pgdyno's migrations.

    Commands stop with its one-line message (which says to run `pgdyno migrate`); a worker or
    dispatcher started before the release phase finished treats it as "not ready yet" and
    retries with backoff, as for an unreachable database.
    """


class JobNotFound(PgdynoError):
    """No job has that id (it may have been pruned)."""


class InvalidJobState(PgdynoError):
    """The job exists but the requested change does not apply to its status."""


class InvalidJob(PgdynoError):
    """The database refused a job (bad queue, task, args, priority or attempts)."""


class UnknownTask(PgdynoError):
    """The worker has no task registered under the job's task name."""


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
    """The platform could not be reached, or kept failing (429, 5xx) after retries."""


class InvalidReport(PermanentJobError):
    """A report cannot run as asked (unknown name, bad parameters, a file that is not one
    read-only query): retrying cannot help, so the job fails at once."""


class ReportFailed(PgdynoError):
    """A report failed on the way (connection lost, upload refused by a busy server): another
    attempt may succeed."""
