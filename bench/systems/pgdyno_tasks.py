"""The benchmark's tasks as pgdyno registers them (imported by `pgdyno worker --import`)."""

from __future__ import annotations

import pgdyno
from bench.stamp import stamp


@pgdyno.task("noop")
def noop() -> None:
    """Does nothing: the drain workload measures the queue, not the work."""


@pgdyno.task("stamp")
def stamp_start(key: int) -> None:
    """Records when the handler started (latency workloads)."""
    stamp(key)
