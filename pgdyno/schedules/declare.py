"""`@pgdyno.periodic`: schedules declared in Python, beside the task they run.

    @pgdyno.periodic(cron="0 3 * * *", queue="reports", timezone="Europe/London",
                     args={"day": "yesterday"})
    @pgdyno.task("nightly_revenue")
    def nightly_revenue(day: str) -> None: ...

The decorator only records the declaration (checking its timing at import). The dispatcher
imports the modules given with `pgdyno dispatcher --import MODULE` and, while it leads, keeps
pgdyno.schedules in step with them: rows of source 'python' are added, updated, and removed
when no imported module declares them any more. Pausing one (`pgdyno schedule pause`) survives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from pgdyno import tasks
from pgdyno.errors import ConfigError
from pgdyno.schedules.timing import Timing

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Declared:
    """One schedule as pgdyno.schedules holds it (task and name resolved)."""

    name: str
    task: str
    queue: str
    args: Mapping[str, Any]
    timing: Timing


@dataclass
class _Pending:
    name: str | None
    task: str
    queue: str
    args: dict[str, Any]
    timing: Timing
    where: str = field(default="")


_pending: list[_Pending] = []


def periodic(
    *,
    cron: str | None = None,
    every: str | float | timedelta | None = None,
    queue: str = "default",
    args: Mapping[str, Any] | None = None,
    timezone: str = "UTC",
    name: str | None = None,
    task: str | None = None,
) -> Callable[[F], F]:
    """Run the decorated task on a schedule: `cron` ("0 3 * * *", read in `timezone`) or
    `every` ("15m", seconds or a timedelta), in `queue`, with `args` as its keyword arguments.

    `name`: the schedule's name (default: the task's name; give one when a task has several
    schedules). `task`: the task to enqueue (default: the task the decorated function is
    registered as: put @pgdyno.periodic above @pgdyno.task). Raises ConfigError at import for a
    bad cron expression, period or time zone, or a function that is no task.
    """
    timing = Timing.of(cron, every, timezone)
    if args is not None and not isinstance(args, Mapping):
        raise ConfigError(f"@pgdyno.periodic args must be a mapping, got {type(args).__name__}")

    def register(fn: F) -> F:
        where = f"{fn.__module__}.{fn.__qualname__}"
        task_name = task or tasks.registered_name(fn)
        if task_name is None:  # the workers would not know what to run
            raise ConfigError(
                f"@pgdyno.periodic on {where}: the function is not a task; put "
                "@pgdyno.periodic above @pgdyno.task(...), or give task='name'"
            )
        _pending.append(_Pending(name, task_name, queue, dict(args or {}), timing, where))
        return fn

    return register


def declared() -> list[Declared]:
    """Every schedule declared so far, named; ConfigError when two declarations share a
    name."""
    found: dict[str, Declared] = {}
    for entry in _pending:
        name = entry.name or entry.task
        if name in found:
            raise ConfigError(
                f"two @pgdyno.periodic schedules are named {name!r} (the second on "
                f"{entry.where}): give each a name=..."
            )
        found[name] = Declared(name, entry.task, entry.queue, entry.args, entry.timing)
    return list(found.values())
