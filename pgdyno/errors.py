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
