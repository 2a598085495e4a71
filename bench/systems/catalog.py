"""Every system the benchmark knows, in measuring order (pgdyno, peers, the thin reference,
then the limit)."""

from __future__ import annotations

from typing import Any

from bench.server import BenchServer
from bench.systems.pgbench import Pgbench
from bench.systems.pgdyno import DRAIN_CONCURRENCY, Pgdyno
from bench.systems.pgqueuer import Pgqueuer
from bench.systems.procrastinate import Procrastinate
from bench.systems.reference import Reference

NAMES = ("pgdyno", "pgqueuer", "procrastinate", "reference", "pgbench-1", "pgbench-100")


def build(
    server: BenchServer, names: tuple[str, ...] = NAMES, pgdyno_concurrency: int = DRAIN_CONCURRENCY
) -> list[Any]:
    """The systems called `names` (unknown names are an error)."""
    unknown = set(names) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown systems {sorted(unknown)}; known: {', '.join(NAMES)}")
    made = {
        "pgdyno": lambda: Pgdyno(pgdyno_concurrency),
        "pgqueuer": Pgqueuer,
        "procrastinate": Procrastinate,
        "reference": Reference,
        "pgbench-1": lambda: Pgbench(server.binary("pgbench"), 1),
        "pgbench-100": lambda: Pgbench(server.binary("pgbench"), 100),
    }
    return [made[name]() for name in NAMES if name in names]
