"""The task registry: `@pgdyno.task("name")` maps a task name to a Python function.

A job's `args` (a JSON object) become the function's keyword arguments. The function's return
value, if JSON-serializable, is stored as the job's result. A task may declare how its jobs
run: `timeout=` (seconds one attempt may take, unless the job sets its own) and `pool=`
("process" to run each of its jobs in a child process whatever the worker's --pool).
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple, TypeVar

from pgdyno.errors import ConfigError, UnknownTask
from pgdyno.logfmt import log_event

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

Pool = Literal["thread", "process"]
POOLS: tuple[Pool, ...] = ("thread", "process")


class TaskOptions(NamedTuple):
    """How a task's jobs run: `timeout` in seconds (None: none), `pool` (None: the worker's)."""

    timeout: float | None = None
    pool: Pool | None = None


_registry: dict[str, Callable[..., Any]] = {}
_options: dict[str, TaskOptions] = {}
_imported: list[str] = []
# Modules that register pgdyno's built-in tasks; imported by every worker. Light: a built-in
# task imports its implementation when its first job runs (reports/task.py).
BUILTIN_MODULES: list[str] = ["pgdyno.reports.task"]


def task(
    name: str | None = None, *, timeout: float | None = None, pool: Pool | None = None
) -> Callable[[F], F]:
    """Register the decorated function as the task `name` (default: the function's name).

    `timeout`: seconds one attempt of its jobs may run (a job's own `timeout` wins); past it the
    attempt fails with JobTimeout. `pool`: "process" runs each of its jobs in a child process
    of its own (a heavy task) even on a thread-pool worker; "thread" in the worker's threads.
    Raises ConfigError for a timeout that is not a positive number of seconds up to a day, or
    an unknown pool.
    """
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or not 0 < timeout <= 86400
    ):
        raise ConfigError(
            f"task timeout must be seconds, more than 0 and at most a day: {timeout!r}"
        )
    if pool is not None and pool not in POOLS:
        raise ConfigError(f"task pool must be 'thread' or 'process', got {pool!r}")
    options = TaskOptions(None if timeout is None else float(timeout), pool)

    def register(fn: F) -> F:
        task_name = name or fn.__name__
        existing = _registry.get(task_name)
        if existing is not None and existing is not fn:
            where = f"{existing.__module__}.{existing.__qualname__}"
            raise ConfigError(f"task {task_name!r} is already registered by {where}")
        _registry[task_name] = fn
        _options[task_name] = options
        return fn

    return register


def registered_name(fn: Callable[..., Any]) -> str | None:
    """The task name `fn` is registered under (the first, if several), or None."""
    return next((name for name, known in _registry.items() if known is fn), None)


def import_modules(modules: Iterable[str]) -> None:
    """Import the modules that register tasks (the worker's --import)."""
    for module in [*BUILTIN_MODULES, *modules]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"cannot import task module {module!r}: {exc}; check --import and PYTHONPATH"
            ) from exc
        if module not in _imported:
            _imported.append(module)


def lookup(name: str) -> Callable[..., Any]:
    """The function for task `name`, or UnknownTask.

    The error (kept in the job's row, which clients read back) names the task only; the
    worker's log line `unknown_task` adds the modules it imported and the tasks it knows.
    """
    try:
        return _registry[name]
    except KeyError:
        log_event(
            log,
            "unknown_task",
            logging.WARNING,
            task=name,
            imported=",".join(_imported) or "none",
            known=",".join(sorted(_registry)) or "none",
        )
        raise UnknownTask(
            f"unknown task {name!r}: no function is registered under that name in this worker; "
            f"start the worker with --import MODULE for the module that defines "
            f"@pgdyno.task({name!r}) (its log line unknown_task lists the tasks it knows)"
        ) from None


def options(name: str) -> TaskOptions:
    """The options task `name` was registered with (defaults for an unknown task)."""
    return _options.get(name, TaskOptions())


def imported_modules() -> list[str]:
    """The modules that registered tasks in this process (built-ins, then --import's)."""
    return [*BUILTIN_MODULES, *(m for m in _imported if m not in BUILTIN_MODULES)]
