"""The task registry: `@pgdyno.task("name")` maps a task name to a Python function.

A job's `args` (a JSON object) become the function's keyword arguments. The function's return
value, if JSON-serializable, is stored as the job's result.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pgdyno.errors import ConfigError, UnknownTask
from pgdyno.logfmt import log_event

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_registry: dict[str, Callable[..., Any]] = {}
_imported: list[str] = []
# Modules that register pgdyno's built-in tasks; imported by every worker.
BUILTIN_MODULES: list[str] = ["pgdyno.reports.runner"]


def task(name: str | None = None) -> Callable[[F], F]:
    """Register the decorated function as the task `name` (default: the function's name)."""

    def register(fn: F) -> F:
        task_name = name or fn.__name__
        existing = _registry.get(task_name)
        if existing is not None and existing is not fn:
            where = f"{existing.__module__}.{existing.__qualname__}"
            raise ConfigError(f"task {task_name!r} is already registered by {where}")
        _registry[task_name] = fn
        return fn

    return register


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
