"""pgdyno: a Postgres-native job queue that scales its own worker dynos, down to zero.

    import pgdyno

    @pgdyno.task("send_invoice")
    def send_invoice(id: int) -> None: ...

    pgdyno.enqueue(conn, "send_invoice", {"id": 7})      # joins the caller's transaction
    pgdyno.run_worker(["default"])                       # or: the `pgdyno worker` command

The names in `__all__` are the stable API: module paths inside the package may change.

Code map: a job's path from INSERT to scale-down.

1. Enqueue. A plain INSERT into pgdyno.jobs, or `enqueue`/`enqueue_many` (enqueue.py, the
   client side; bulk.py writes enqueue_many's COPY data; statements in sql/queue.sql). The
   table's statement trigger checks the rows against the enqueue contract (which role may
   set which column, bounds on values, keys reserved to pgdyno: 0009_security.sql and 0010
   in sql/migrations/, roles.py) and, at commit, sends NOTIFY pgdyno_jobs for the queues a
   session waits on (0011, worker/waiting.py).
2. The dispatcher wakes (scaling/dispatcher.py, on the always-on dyno): LISTEN, debounce,
   then `Scaler.scale_up` for every process type whose queues it serves.
3. Scale up (scaling/scaler.py): lock the type's row in pgdyno.formations (never waiting: a
   locked type is decided again shortly), read the load (scaling/state.py), decide with the
   pure policy (scaling/policy.py), call the formation backend once (scaling/formation/: the
   Heroku Platform API; locally `pgdyno dev`, platform/), record the scale event; a failed
   call records when the type may be called again (Retry-After, backoff).
4. A dyno starts `pgdyno worker` (cli/worker.py, or `run_worker` here: embed.py), which builds
   a `Worker` (worker/loop.py) with scale-to-zero as its idle callback (scaling/idle.py).
5. Claim and run. Each turn of the worker loop reports finished jobs and claims new ones in
   one statement (`queue.complete_and_claim`); executor threads (worker/threads.py) run each
   job's task (worker/executor.py, the registry in tasks.py), in themselves or, with
   `--pool process`, each in a child process (worker/pool.py, worker/child.py) under a
   timeout and a memory limit (in a thread, a job past its timeout is abandoned and keeps its
   slot until its task returns: worker/abandoned.py), while the loop heartbeats the leases
   (worker/timers.py holds its deadlines, worker/session.py its connections and their LISTEN
   check, worker/health.py).
   Every write about a job is fenced by its attempt (worker/fencing.py); an outcome the
   database could not store fails its job instead (worker/storable.py).
6. Outcomes: the next claim marks done jobs done; failures are retried with backoff
   (backoff.py) or failed; jobs whose worker died are rescued when their lease expires
   (rescue.py, by every worker's poll and the dispatcher's timer).
7. Scale to zero. Idle past the rule's linger, the worker calls `Scaler.scale_to_zero`: under
   the same lock, it checks that no job of the type's queues, nor of any queue its workers
   serve (the registry, registry.py), is ready or running, and that the whole type lingered,
   sets the quantity to 0, and re-checks after its commit. A job committed meanwhile is seen by the
   dispatcher, whose decision waited for that lock (the argument is in scaling/scaler.py).
8. The platform sends SIGTERM (signals.py); the worker stops claiming, lets running jobs
   finish within the grace period, hands back the rest, and exits.

Around the path: schedules/ (recurring jobs the acting dispatcher enqueues once per scheduled
time), unique keys (enqueue.enqueue_unique), pausing.py (paused queues, left out of the claim and
the scaling load), cancellation.py with worker/cancels.py (cancelling a running job), and
results.py (waiting for a job's outcome).

Shared by all: config.py (Settings, the only reader of the environment), errors.py (the
exception tree), db.py (connections, reconnect, pgdyno's own sessions' search_path), clock.py
(time and waiting), logfmt.py (one log line per event, secrets redacted), sql/ (every
statement, by name), migrate.py, registry.py (the workers registry: each worker's row in
pgdyno.workers). Reports (reports/) are a
built-in task; demo/ is `make run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgdyno.cancellation import cancel
from pgdyno.config import Settings
from pgdyno.embed import build_worker, run_worker
from pgdyno.enqueue import JobSpec, enqueue, enqueue_many
from pgdyno.errors import (
    ConfigError,
    FormationError,
    InvalidJob,
    InvalidJobState,
    JobCancelled,
    JobFailed,
    JobNotFound,
    NotInTask,
    PermanentJobError,
    PgdynoError,
    ResultTimeout,
    ScheduleNotFound,
    UnknownTask,
)
from pgdyno.results import result
from pgdyno.tasks import task
from pgdyno.worker.executor import JobContext, current_job
from pgdyno.worker.loop import Worker

if TYPE_CHECKING:
    from pgdyno.schedules.declare import periodic


def __getattr__(name: str) -> Any:
    """`pgdyno.periodic` is imported when first asked for: schedules (cron parsing, time
    zones) are the dispatcher's, and a worker's start need not load them."""
    if name == "periodic":
        from pgdyno.schedules.declare import periodic

        globals()["periodic"] = periodic  # asked once
        return periodic
    raise AttributeError(f"module 'pgdyno' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "FormationError",
    "InvalidJob",
    "InvalidJobState",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobNotFound",
    "JobSpec",
    "NotInTask",
    "PermanentJobError",
    "PgdynoError",
    "ResultTimeout",
    "ScheduleNotFound",
    "Settings",
    "UnknownTask",
    "Worker",
    "build_worker",
    "cancel",
    "current_job",
    "enqueue",
    "enqueue_many",
    "periodic",
    "result",
    "run_worker",
    "task",
]
