"""Idle worker memory: the resident set of a worker that has started, run a few jobs and waits.

Measured with the same flags as the other workloads (for pgdyno also with its default
--concurrency 1, the way the Procfile runs it). RSS of the process and any children.
"""

from __future__ import annotations

import time
from typing import Any

from bench.latency import start_listening_worker
from bench.registry import Figure, benchmark
from bench.runner import Context, rss_mb
from bench.systems.base import WorkerCommand

SETTLE_S = 2.0


class _Flags:
    """A system whose worker() uses a given --concurrency (pgdyno's default, here)."""

    def __init__(self, system: Any, concurrency: int) -> None:
        self._system, self._concurrency = system, concurrency

    def __getattr__(self, name: str) -> Any:
        return getattr(self._system, name)

    def worker(self, url: str, *, drain: bool, concurrency: int | None = None) -> WorkerCommand:
        return self._system.worker(url, drain=drain, concurrency=self._concurrency)


def idle_rss(ctx: Context, system: Any) -> float:
    with ctx.database(system) as url:
        worker, producer, _ = start_listening_worker(ctx, system, url, f"{system.name}-idle")
        producer.close()
        try:
            time.sleep(SETTLE_S)
            return rss_mb(worker.pid)
        finally:
            worker.stop()


@benchmark("memory", "idle worker RSS after start-up and a few jobs", order=50)
def memory(ctx: Context) -> list[Figure]:
    row = Figure(
        "idle_rss", "Idle worker RSS", "MB", "lower", target="< 60 MB", goals=[("max", 60.0)]
    )
    for system in ctx.of_role("subject", "peer"):
        try:
            row.values[system.name] = idle_rss(ctx, system)
            if system.name == "pgdyno":
                default = idle_rss(ctx, _Flags(system, 1))
                row.detail[system.name] = {
                    "bench_flags_mb": row.values[system.name],
                    "concurrency_1_mb": default,
                }
                row.notes[system.name] = f"{default:.1f} MB with the default --concurrency 1"
        except Exception as exc:
            row.notes[system.name] = f"failed: {str(exc)[:200]}"
            ctx.say(f"  {system.name} idle RSS: FAILED {exc}")
            continue
        ctx.say(f"  {system.name} idle RSS: {row.values[system.name]:.1f} MB")
    return [row]
