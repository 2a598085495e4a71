"""The task of bench/job_overhead.py, imported by its workers (--import bench.overhead_tasks)."""

from __future__ import annotations

import pgdyno


@pgdyno.task("overhead.hello")
def hello() -> str:
    """Nothing to do: what a job costs besides its task."""
    return "hello"
