"""pgdyno, driven through its public API (enqueue, enqueue_many) and its CLI (migrate, worker).

Everything the product does stays on: the enqueue trigger's NOTIFY, leases and heartbeats,
finished jobs kept as history in pgdyno.jobs_finished.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import psycopg

import pgdyno
from bench.systems.base import (
    NOOP,
    QUEUE,
    STAMP,
    Completions,
    WorkerCommand,
    child_env,
    scalar,
    venv_bin,
)

#: Jobs one worker process runs at once during the drain (a public flag, reported with the
#: figures). No-op jobs finish at once, so this is in effect the claim batch size.
DRAIN_CONCURRENCY = 300


@dataclass
class PgdynoProducer:
    conn: psycopg.Connection

    def single(self, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            pgdyno.enqueue(self.conn, NOOP, queue=QUEUE)
        return time.perf_counter() - started

    def bulk(self, count: int) -> float:
        jobs = [pgdyno.JobSpec(task=NOOP, queue=QUEUE) for _ in range(count)]
        started = time.perf_counter()
        pgdyno.enqueue_many(self.conn, jobs)
        return time.perf_counter() - started

    def stamped(self, keys: Sequence[int]) -> float:
        if len(keys) == 1:
            pgdyno.enqueue(self.conn, STAMP, {"key": keys[0]}, queue=QUEUE)
        else:
            pgdyno.enqueue_many(
                self.conn,
                [pgdyno.JobSpec(task=STAMP, args={"key": key}, queue=QUEUE) for key in keys],
            )
        return time.time()

    def close(self) -> None:
        self.conn.close()


class Pgdyno:
    name = "pgdyno"
    role = "subject"

    def __init__(self, concurrency: int = DRAIN_CONCURRENCY) -> None:
        self.concurrency = concurrency

    def version(self) -> str:
        return version("pgdyno")

    def describe(self) -> dict[str, object]:
        return {
            "worker": f"pgdyno worker --concurrency {self.concurrency} (drain, 1 queue)",
            "log_level": "WARNING (per-job INFO lines off, as for every system)",
            "enqueue": "pgdyno.enqueue (INSERT); bulk: pgdyno.enqueue_many (text COPY)",
        }

    def install(self, url: str) -> None:
        subprocess.run(
            [venv_bin("pgdyno"), "migrate", "--database-url", url],
            check=True,
            capture_output=True,
            env=child_env(url),
        )

    def prefill(self, url: str, count: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            pgdyno.enqueue_many(conn, [pgdyno.JobSpec(task=NOOP, queue=QUEUE)] * count)

    def producer(self, url: str) -> PgdynoProducer:
        return PgdynoProducer(psycopg.connect(url, autocommit=True))

    def worker(self, url: str, *, drain: bool, concurrency: int | None = None) -> WorkerCommand:
        argv = [
            venv_bin("pgdyno"),
            "worker",
            "--queue",
            QUEUE,
            "--import",
            "bench.systems.pgdyno_tasks",
            "--concurrency",
            str(concurrency or self.concurrency),
        ]
        if drain:
            argv.append("--burst")
        return WorkerCommand(argv, {"DATABASE_URL": url, "PGDYNO_LOG_LEVEL": "WARNING"})

    def pending(self, url: str) -> int:
        return int(scalar(url, "SELECT count(*) FROM pgdyno.jobs_active"))  # type: ignore[arg-type]

    def completions(self, url: str, since: float = 0.0) -> Completions:
        with psycopg.connect(url, autocommit=True) as conn:
            count, first, last = conn.execute(
                "SELECT count(*), extract(epoch FROM min(finished_at))::float8,"
                "       extract(epoch FROM max(finished_at))::float8"
                "  FROM pgdyno.jobs_finished WHERE status = 'done'"
                "   AND finished_at >= to_timestamp(%s)",
                (since,),
            ).fetchone()  # type: ignore[misc]
        return Completions(int(count), first, last)

    def hot_table(self) -> str:
        # The partitioned parent pgdyno.jobs has no storage: ready and running jobs live here.
        return "pgdyno.jobs_active"
