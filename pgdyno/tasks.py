"""The task registry: `@pgdyno.task("name")` maps a task name to a Python function.

A job's `args` (a JSON object) become the function's keyword arguments. The function's return
value, if JSON-serializable, is stored as the job's result.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pgdyno.errors import ConfigError, UnknownTask

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
    """The function for task `name`, or UnknownTask naming what this worker knows."""
    try:
        return _registry[name]
    except KeyError:
        modules = ", ".join(_imported) or "none"
        known = ", ".join(sorted(_registry)) or "none"
        raise UnknownTask(
            f"unknown task {name!r}: no function is registered under that name in this worker "
            f"(imported modules: {modules}; known tasks: {known}); start the worker with "
            f"--import MODULE for the module that defines @pgdyno.task({name!r})"
        ) from None
