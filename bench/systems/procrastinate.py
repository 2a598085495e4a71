"""Procrastinate (PyPI `procrastinate`): worker concurrency 10, everything else its default.

Schema applied with `procrastinate schema --apply`; workers by `procrastinate worker` (with
--one-shot for the drain: it exits once the queue is caught up). Finished jobs stay in
`procrastinate_jobs` (status 'succeeded'), its hot table; the completion time is the
'succeeded' row of `procrastinate_events`.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Coroutine, Sequence
from importlib.metadata import version
from typing import Any

import psycopg

from bench.systems.base import (
    QUEUE,
    Completions,
    WorkerCommand,
    child_env,
    scalar,
    venv_bin,
)

APP = "bench.systems.procrastinate_app.app"
CONCURRENCY = 10


class ProcrastinateProducer:
    """The app opened on an asyncio loop; jobs deferred with defer_async / batch_defer_async."""

    def __init__(self, url: str) -> None:
        from bench.systems.procrastinate_app import make_app

        self.runner = asyncio.Runner()
        self.app = make_app(url)
        self.noop = self.app.tasks["noop"]
        self.stamp = self.app.tasks["stamp"]

        async def open_app() -> None:
            await self.app.open_async()

        self._run(open_app())

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.runner.run(coro)

    def single(self, count: int) -> float:
        async def go() -> float:
            started = time.perf_counter()
            for _ in range(count):
                await self.noop.defer_async()
            return time.perf_counter() - started

        return self._run(go())

    def bulk(self, count: int) -> float:
        async def go() -> float:
            kwargs = [{}] * count
            started = time.perf_counter()
            await self.noop.batch_defer_async(*kwargs)
            return time.perf_counter() - started

        return self._run(go())

    def stamped(self, keys: Sequence[int]) -> float:
        async def go() -> float:
            if len(keys) == 1:
                await self.stamp.defer_async(key=keys[0])
            else:
                await self.stamp.batch_defer_async(*({"key": key} for key in keys))
            return time.time()

        return self._run(go())

    def close(self) -> None:
        self._run(self.app.close_async())
        self.runner.close()


class Procrastinate:
    name = "procrastinate"
    role = "peer"

    def version(self) -> str:
        return version("procrastinate")

    def describe(self) -> dict[str, object]:
        return {
            "worker": f"procrastinate worker --concurrency {CONCURRENCY} (PsycopgConnector)",
            "enqueue": "Task.defer_async; bulk: Task.batch_defer_async",
        }

    def install(self, url: str) -> None:
        subprocess.run(
            [venv_bin("procrastinate"), f"--app={APP}", "schema", "--apply"],
            check=True,
            capture_output=True,
            env=child_env(url),
        )

    def prefill(self, url: str, count: int) -> None:
        producer = ProcrastinateProducer(url)
        try:
            producer.bulk(count)
        finally:
            producer.close()

    def producer(self, url: str) -> ProcrastinateProducer:
        return ProcrastinateProducer(url)

    def worker(self, url: str, *, drain: bool, concurrency: int | None = None) -> WorkerCommand:
        argv = [
            venv_bin("procrastinate"),
            f"--app={APP}",
            "--log-level",
            "warning",
            "worker",
            "--concurrency",
            str(concurrency or CONCURRENCY),
            "--queues",
            QUEUE,
        ]
        if drain:
            argv.append("--one-shot")
        return WorkerCommand(argv)

    def pending(self, url: str) -> int:
        return int(
            scalar(  # type: ignore[arg-type]
                url, "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            )
        )

    def completions(self, url: str, since: float = 0.0) -> Completions:
        with psycopg.connect(url, autocommit=True) as conn:
            count, first, last = conn.execute(
                "SELECT count(*), extract(epoch FROM min(at))::float8,"
                "       extract(epoch FROM max(at))::float8"
                "  FROM procrastinate_events WHERE type = 'succeeded'"
                "   AND at >= to_timestamp(%s)",
                (since,),
            ).fetchone()  # type: ignore[misc]
        return Completions(int(count), first, last)

    def hot_table(self) -> str:
        return "public.procrastinate_jobs"
