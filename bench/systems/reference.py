"""The reference: a thin psycopg queue, what a good engineer writes in an afternoon.

One table, a worker that claims 100 jobs per statement with SKIP LOCKED and deletes them when
done (bench/systems/reference_app.py): no lease, no retry, no history, no notification. Issue
15 asks pgdyno to drain and bulk-enqueue at 0.9x of it at least while keeping all of those.
Enqueue: one INSERT per transaction; bulk: one COPY.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg

from bench.systems.base import NOOP, QUEUE, STAMP, Completions, WorkerCommand, python, scalar

SCHEMA = """
CREATE TABLE reference_jobs (
    id     bigserial   PRIMARY KEY,
    queue  text        NOT NULL,
    task   text        NOT NULL,
    args   jsonb       NOT NULL DEFAULT '{}',
    status smallint    NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reference_jobs_ready_idx ON reference_jobs (queue, run_at, id) WHERE status = 0;
CREATE TABLE reference_done (jobs bigint, first timestamptz, last timestamptz);
"""
INSERT = "INSERT INTO reference_jobs (queue, task, args) VALUES (%s, %s, %s)"


class ReferenceProducer:
    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def single(self, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            self.conn.execute(INSERT, (QUEUE, NOOP, "{}"), prepare=True)
        return time.perf_counter() - started

    def bulk(self, count: int) -> float:
        started = time.perf_counter()
        with self.conn.cursor().copy("COPY reference_jobs (queue, task) FROM STDIN") as copy:
            for _ in range(count):
                copy.write_row((QUEUE, NOOP))
        return time.perf_counter() - started

    def stamped(self, keys: Sequence[int]) -> float:
        with self.conn.transaction():
            for key in keys:
                self.conn.execute(INSERT, (QUEUE, STAMP, f'{{"key": {key}}}'))
        return time.time()

    def close(self) -> None:
        self.conn.close()


class Reference:
    name = "reference"
    role = "reference"

    def version(self) -> str:
        return psycopg.__version__

    def describe(self) -> dict[str, object]:
        return {
            "worker": "bench/systems/reference_app.py: claim 100 (SKIP LOCKED), run, DELETE",
            "enqueue": "INSERT; bulk: COPY",
        }

    def install(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)  # type: ignore[arg-type]

    def prefill(self, url: str, count: int) -> None:
        producer = ReferenceProducer(url)
        try:
            producer.bulk(count)
        finally:
            producer.close()

    def producer(self, url: str) -> ReferenceProducer:
        return ReferenceProducer(url)

    def worker(self, url: str, *, drain: bool, concurrency: int | None = None) -> WorkerCommand:
        argv = [python(), "-m", "bench.systems.reference_app"]
        if drain:
            argv.append("--drain")
        return WorkerCommand(argv)

    def pending(self, url: str) -> int:
        return int(scalar(url, "SELECT count(*) FROM reference_jobs"))  # type: ignore[arg-type]

    def completions(self, url: str, since: float = 0.0) -> Completions:
        with psycopg.connect(url, autocommit=True) as conn:
            count, first, last = conn.execute(
                "SELECT coalesce(sum(jobs), 0), extract(epoch FROM min(first))::float8,"
                "       extract(epoch FROM max(last))::float8"
                "  FROM reference_done WHERE last >= to_timestamp(%s)",
                (since,),
            ).fetchone()  # type: ignore[misc]
        return Completions(int(count), first, last)

    def hot_table(self) -> str:
        return "public.reference_jobs"
