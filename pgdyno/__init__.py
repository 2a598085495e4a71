"""pgdyno: a Postgres-native job queue that scales its own worker dynos, down to zero.

import pgdyno

@pgdyno.task("send_invoice")
def send_invoice(id: int) -> None: ...

pgdyno.enqueue(conn, "send_invoice", {"id": 7})
"""

from __future__ import annotations

from pgdyno.errors import (
    ConfigError,
    FormationError,
    InvalidJob,
    InvalidJobState,
    JobNotFound,
    PermanentJobError,
    PgdynoError,
    UnknownTask,
)
from pgdyno.queue import JobSpec, enqueue, enqueue_many
from pgdyno.tasks import task
from pgdyno.worker.executor import JobContext, current_job

__all__ = [
    "ConfigError",
    "FormationError",
    "InvalidJob",
    "InvalidJobState",
    "JobContext",
    "JobNotFound",
    "JobSpec",
    "PermanentJobError",
    "PgdynoError",
    "UnknownTask",
    "current_job",
    "enqueue",
    "enqueue_many",
    "task",
]
