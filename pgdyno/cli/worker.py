"""`pgdyno worker`: runs jobs, and scales its own process type to zero when drained."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from pgdyno.cli.common import DURATION, database_option
from pgdyno.config import Settings, parse_size
from pgdyno.errors import ConfigError


class Size(click.ParamType):  # type: ignore[type-arg]
    """A memory size flag (`512MB`, `2GB`) -> bytes, read by config.parse_size."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        try:
            return parse_size(value, param.opts[0] if param else "size")
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


def app_root_importable() -> None:
    """Put the working directory first on sys.path, so `--import myapp.tasks` finds the app's
    modules: as `python -m` does, and as on Heroku, where the app root is the working
    directory (`pgdyno dev` runs each Procfile line in the Procfile's folder)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


@click.command()
@click.option(
    "--queue",
    "-q",
    "queues",
    multiple=True,
    required=True,
    help="Queue to take jobs from (repeatable).",
)
@click.option(
    "--import",
    "-i",
    "modules",
    multiple=True,
    help="Module that registers tasks with @pgdyno.task (repeatable).",
)
@click.option(
    "--concurrency",
    "-c",
    type=int,
    default=None,
    help="Jobs run at once [env PGDYNO_CONCURRENCY; default 1].",
)
@click.option("--burst", is_flag=True, help="Exit 0 once the queues have no job ready to run.")
@click.option(
    "--lease", type=DURATION, default=None, help="Job lease, e.g. 30s [env PGDYNO_LEASE]."
)
@click.option(
    "--grace",
    type=DURATION,
    default=None,
    help="Time running jobs get on SIGTERM, e.g. 25s [env PGDYNO_GRACE].",
)
@click.option(
    "--poll-interval",
    type=DURATION,
    default=None,
    help="Fallback poll period, e.g. 2s [env PGDYNO_POLL_INTERVAL].",
)
@click.option(
    "--pool",
    type=click.Choice(["thread", "process"]),
    default=None,
    help="Where jobs run: in the worker's threads (light jobs), or each in a child process of "
    "its own (heavy jobs: memory freed after each job, real timeouts, a memory limit, a crash "
    "stays one job's) [env PGDYNO_POOL; default thread].",
)
@click.option(
    "--max-job-memory",
    type=Size(),
    default=None,
    metavar="SIZE",
    help="Memory (resident) a job's process may use before it is stopped, e.g. 512MB or 2GB; "
    "with --pool process [env PGDYNO_MAX_JOB_MEMORY; default 80% of the dyno's memory "
    "divided by the concurrency].",
)
@click.option(
    "--process-type",
    default=None,
    help="This worker's process type, to scale it to zero when drained "
    "[env PGDYNO_PROCESS_TYPE; default: from DYNO].",
)
@database_option
def worker(
    queues: tuple[str, ...],
    modules: tuple[str, ...],
    concurrency: int | None,
    burst: bool,
    lease: float | None,
    grace: float | None,
    poll_interval: float | None,
    pool: str | None,
    max_job_memory: int | None,
    process_type: str | None,
    database_url: str | None,
) -> None:
    """Run jobs from the given queues until SIGTERM (or drained, with --burst).

    A worker that knows its process type (DYNO=winston.1, or --process-type) and can reach
    the formation API scales its type to zero once the type's queues are drained and the
    rule's linger has passed. --import modules are found from the working directory (the
    app root).
    """
    from pgdyno.embed import run_worker

    settings = Settings.from_env(
        database_url=database_url,
        concurrency=concurrency,
        lease=lease,
        grace=grace,
        poll_interval=poll_interval,
        pool=pool,
        max_job_memory=max_job_memory,
        process_type=process_type,
    )
    app_root_importable()
    # The same worker as pgdyno.run_worker builds for a script (embed.py): registered in
    # pgdyno.workers, scaling its type to zero once drained (never with --burst).
    sys.exit(
        run_worker(queues, settings=settings, imports=modules, burst=burst, handle_signals=True)
    )


def register(group: click.Group) -> None:
    group.add_command(worker)
