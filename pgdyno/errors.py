"""The exceptions pgdyno raises, each with a message that says what to do next."""

from __future__ import annotations


class PgdynoError(Exception):
    """Base class: anything pgdyno raises on purpose."""


class ConfigError(PgdynoError):
    """A setting is missing or invalid (environment variable, flag, file)."""


class DatabaseUnavailable(PgdynoError):
    """Postgres cannot be reached; callers retry with backoff."""


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


class InvalidReport(PermanentJobError):
    """A report cannot run as asked (unknown name, bad parameters, a file that is not one
    read-only query): retrying cannot help, so the job fails at once."""


class ReportFailed(PgdynoError):
    """A report failed on the way (connection lost, upload refused by a busy server): another
    attempt may succeed."""
