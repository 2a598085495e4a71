"""Running a worker inside your own process (a script, a web app's dyno, a test): the same
wiring as `pgdyno worker`, as functions. `pgdyno.run_worker` and `pgdyno.build_worker` are the
stable names; this module's path may change."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from pgdyno import registry, tasks
from pgdyno.config import Settings
from pgdyno.worker.loop import Worker, worker_id


def build_worker(
    queues: Sequence[str],
    *,
    settings: Settings | None = None,
    imports: Sequence[str] = (),
    burst: bool = False,
    scale_down: bool = True,
) -> Worker:
    """A Worker for `queues`, its task modules imported, ready to `run()` (and to `stop()`
    from another thread).

    - `settings`: default `Settings.from_env()` (DATABASE_URL, PGDYNO_CONCURRENCY, ...);
    - `imports`: modules that register tasks with @pgdyno.task, imported now, after those of
      `settings.imports` (PGDYNO_IMPORT);
    - `burst`: `run()` returns once the queues have no job ready to run;
    - `scale_down`: scale this dyno's process type to zero once its queues are drained (needs
      DYNO or PGDYNO_PROCESS_TYPE, HEROKU_API_KEY and HEROKU_APP_NAME; without them it is
      logged as disabled); never in burst mode.

    Raises ConfigError (no database URL, a module that cannot be imported, an invalid
    environment) and ValueError (no queue).
    """
    settings = settings if settings is not None else Settings.from_env()
    settings.require_database_url()
    tasks.import_modules([*settings.import_list, *imports])
    name = worker_id(settings.dyno)
    idle_callback = None
    if scale_down and not burst:
        from pgdyno.scaling import idle  # the Heroku client: only for workers that scale

        idle_callback = idle.from_settings(settings, actor=f"worker {name}", queues=queues)
    worker = Worker(settings, queues, burst=burst, idle_callback=idle_callback, id=name)
    worker.registration = registry.for_worker(name, worker.queues, settings)  # pgdyno.workers
    return worker


def run_worker(
    queues: Sequence[str],
    *,
    settings: Settings | None = None,
    imports: Sequence[str] = (),
    burst: bool = False,
    scale_down: bool = True,
    handle_signals: bool | None = None,
) -> int:
    """Run a worker on `queues` in this process until SIGTERM/SIGINT (or drained, with
    `burst`); returns the exit code, 0 after a clean stop.

    The arguments are build_worker's; `handle_signals` installs the SIGTERM/SIGINT handlers
    (default: when called from the main thread, the only one Python lets install them) for the
    time of the run. A SIGTERM lets running jobs finish within the grace period
    (PGDYNO_GRACE), then hands the rest back to the queue.
    """
    worker = build_worker(
        queues, settings=settings, imports=imports, burst=burst, scale_down=scale_down
    )
    if handle_signals is None:
        handle_signals = threading.current_thread() is threading.main_thread()
    restore = worker.install_signal_handlers() if handle_signals else None
    try:
        return worker.run()
    finally:
        if restore is not None:
            restore()  # the caller's own handlers again
