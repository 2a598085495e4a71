"""PgQueuer (PyPI `pgqueuer`): its default asyncpg driver on uvloop, its default batch size.

Schema by `pgq install`; workers run `pgqueuer.run(factory)` as `pgq run` does (see
pgqueuer_app; drain mode exits once the queue is empty). A finished job is deleted from the
`pgqueuer` table (the hot table) and logged in `pgqueuer_log`, whose `created` time is the
completion time.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Coroutine, Sequence
from importlib.metadata import version
from typing import Any

import asyncpg
import psycopg
import uvloop
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

from bench.systems.base import (
    NOOP,
    STAMP,
    Completions,
    WorkerCommand,
    child_env,
    python,
    scalar,
    venv_bin,
)


class PgqueuerProducer:
    """One asyncpg connection on a uvloop loop, used the way PgQueuer's docs enqueue."""

    def __init__(self, url: str) -> None:
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self.conn: asyncpg.Connection = self._run(asyncpg.connect(url))
        self.queries = Queries(AsyncpgDriver(self.conn))

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.runner.run(coro)

    def single(self, count: int) -> float:
        async def go() -> float:
            started = time.perf_counter()
            for _ in range(count):
                await self.queries.enqueue(NOOP, None)
            return time.perf_counter() - started

        return self._run(go())

    def bulk(self, count: int) -> float:
        async def go() -> float:
            entrypoints, payloads, priorities = [NOOP] * count, [None] * count, [0] * count
            started = time.perf_counter()
            await self.queries.enqueue(entrypoints, payloads, priorities)  # type: ignore[arg-type]
            return time.perf_counter() - started

        return self._run(go())

    def stamped(self, keys: Sequence[int]) -> float:
        async def go() -> float:
            if len(keys) == 1:
                await self.queries.enqueue(STAMP, str(keys[0]).encode())
            else:
                await self.queries.enqueue(
                    [STAMP] * len(keys),  # type: ignore[arg-type]
                    [str(key).encode() for key in keys],
                    [0] * len(keys),
                )
            return time.time()

        return self._run(go())

    def close(self) -> None:
        self._run(self.conn.close())
        self.runner.close()


class Pgqueuer:
    name = "pgqueuer"
    role = "peer"

    def version(self) -> str:
        return version("pgqueuer")

    def describe(self) -> dict[str, object]:
        return {
            "worker": "pgqueuer.run(factory) on uvloop, as `pgq run` does (AsyncpgDriver, "
            "default batch size 10)",
            "enqueue": "Queries.enqueue (one INSERT ... unnest; lists for bulk)",
        }

    def install(self, url: str) -> None:
        subprocess.run(
            [venv_bin("pgq"), "--pg-dsn", url, "install"],
            check=True,
            capture_output=True,
            env=child_env(url),
        )

    def prefill(self, url: str, count: int) -> None:
        producer = PgqueuerProducer(url)
        try:
            producer.bulk(count)
        finally:
            producer.close()

    def producer(self, url: str) -> PgqueuerProducer:
        return PgqueuerProducer(url)

    def worker(self, url: str, *, drain: bool, concurrency: int | None = None) -> WorkerCommand:
        argv = [python(), "-m", "bench.systems.pgqueuer_app"]
        if drain:
            argv.append("--drain")
        if concurrency is not None:  # its batch size (default 10), the benchmark's knob
            argv += ["--batch-size", str(concurrency)]
        return WorkerCommand(argv)

    def pending(self, url: str) -> int:
        return int(scalar(url, "SELECT count(*) FROM pgqueuer"))  # type: ignore[arg-type]

    def completions(self, url: str, since: float = 0.0) -> Completions:
        with psycopg.connect(url, autocommit=True) as conn:
            count, first, last = conn.execute(
                "SELECT count(*), extract(epoch FROM min(created))::float8,"
                "       extract(epoch FROM max(created))::float8"
                "  FROM pgqueuer_log WHERE status = 'successful'"
                "   AND created >= to_timestamp(%s)",
                (since,),
            ).fetchone()  # type: ignore[misc]
        return Completions(int(count), first, last)

    def hot_table(self) -> str:
        return "public.pgqueuer"
