"""The benchmark's Procrastinate app (the worker loads `app`; the bench client calls make_app).

PsycopgConnector (Procrastinate's async default). The tasks are async, as Procrastinate's docs
ask when a worker runs with concurrency > 1.
"""

from __future__ import annotations

import os

import procrastinate

from bench.stamp import stamp


def make_app(url: str) -> procrastinate.App:
    """An app on database `url` with the benchmark's two tasks."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop", queue="bench")
    async def noop() -> None:
        """Does nothing: the drain workload measures the queue, not the work."""

    @app.task(name="stamp", queue="bench")
    async def stamp_start(key: int) -> None:
        stamp(key)

    return app


app = make_app(os.environ.get("BENCH_DATABASE_URL", ""))
