"""The built-in `report` task as every worker registers it: a light module.

Every worker imports this module (tasks.BUILTIN_MODULES), so that a report job finds its task
in any worker. The work itself (reports/runner.py, with the catalog, the stores and the HTTP
fence) is imported when the first report job runs, not at every worker's start: most workers
never run a report, and that import was the largest part of pgdyno's own start-up. A report
job pays it once per worker process (the process pool's fork server imports it beforehand:
worker/pool.py).
"""

from __future__ import annotations

from typing import Any

from pgdyno.config import Settings
from pgdyno.tasks import task
from pgdyno.worker.executor import current_job


@task("report")
def report(
    name: str,
    params: dict[str, Any] | None = None,
    store: str = "postgres",
    url: str | None = None,
    headers: dict[str, str] | None = None,
    spool: bool = False,
) -> dict[str, Any]:
    """Run report `name` with `params`; store its gzipped CSV (postgres, directory or http).

    Returns what the job's result records (reports/runner.py's `run`); raises InvalidReport
    (retrying cannot help: the job fails at once) or ReportFailed (retried)."""
    from pgdyno.reports import runner  # the first report job of this process imports it

    job = current_job()
    return runner.run(
        Settings.from_env(),
        job_id=job.id,
        database_url=job.database_url,
        name=name,
        params=params,
        store=store,
        url=url,
        headers=headers,
        spool=spool,
        progress=lambda fields: job.set_progress(**fields),
        on_cancel=job.on_cancel,
    )
