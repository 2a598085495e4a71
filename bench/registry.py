"""The benchmark registry: modules register named benchmarks; `python -m bench` runs them.

A benchmark is a function of a Context returning Figures. Any module of the `bench` package
may register some (`@benchmark("reports", ...)`): `python -m bench` imports every module of
the package (discover()), so a new benchmark is one new file, with no list to edit here.
The report code only knows Figures, never which benchmark made them.

A module that registers nothing but has its own `main(argv)` (bench/reports.py and
bench/scaling.py run as `python -m bench.reports`) is registered under its name as a
stand-alone benchmark: `python -m bench reports` runs its main() with its defaults; it prints
its own table, writes its own JSON and starts its own server. Stand-alone benchmarks are not
part of a default run (they would break its ten-minute budget); name them to run them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bench.runner import Context

Better = Literal["higher", "lower"]


@dataclass
class Figure:
    """One measured quantity across systems (a row of the table)."""

    key: str  # stable id, e.g. "drain_1w" (JSON and chart use it)
    workload: str  # what the row says, e.g. "W1 drain, 1 worker"
    unit: str  # "jobs/s", "ms", "MB", ...
    better: Better
    values: dict[str, float | None] = field(default_factory=dict)
    #: Per system: a caveat printed next to the value ("saturated", "lower bound", ...).
    notes: dict[str, str] = field(default_factory=dict)
    #: The goal from issue 5, as text, and as checks (kind, number): ("x_pgqueuer", 3.0):
    #: pgdyno at least 3 times better than PgQueuer; ("max", 3.0): pgdyno's value under 3.
    target: str | None = None
    goals: list[tuple[str, float]] = field(default_factory=list)
    #: Everything else measured on the way (JSON only).
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    name: str
    help: str
    run: Callable[[Context], list[Figure]]
    #: Benchmarks run in this order (a later one may use an earlier one's results).
    order: int = 100
    #: Whether `python -m bench` without names runs it.
    default: bool = True


REGISTRY: dict[str, Benchmark] = {}


def benchmark(
    name: str, help: str, order: int = 100
) -> Callable[[Callable[[Context], list[Figure]]], Callable[[Context], list[Figure]]]:
    """Register the decorated function as the benchmark `name`."""

    def register(fn: Callable[[Context], list[Figure]]) -> Callable[[Context], list[Figure]]:
        if name in REGISTRY and REGISTRY[name].run is not fn:
            raise ValueError(f"benchmark {name!r} is registered twice")
        REGISTRY[name] = Benchmark(name, help, fn, order)
        return fn

    return register


def discover() -> dict[str, Benchmark]:
    """Import every module of the bench package (registering its benchmarks)."""
    package_dir = Path(__file__).resolve().parent
    for info in pkgutil.iter_modules([str(package_dir)]):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        registers = any(b.run.__module__ == module.__name__ for b in REGISTRY.values())
        main = getattr(module, "main", None)
        if not registers and callable(main) and info.name not in REGISTRY:
            REGISTRY[info.name] = Benchmark(
                info.name,
                (module.__doc__ or info.name).strip().splitlines()[0]
                + " (stand-alone: own server, table and JSON)",
                _stand_alone(main),
                200,
                default=False,
            )
    return dict(sorted(REGISTRY.items(), key=lambda item: (item[1].order, item[0])))


def _stand_alone(main: Callable[[list[str]], Any]) -> Callable[[Context], list[Figure]]:
    def run(ctx: Context) -> list[Figure]:
        main([])
        return []

    return run
