"""The benchmark's PgQueuer worker: a factory as PgQueuer's docs show it, run as `pgq run` does.

One asyncpg connection through AsyncpgDriver (PgQueuer's default driver), on uvloop, every
other setting PgQueuer's default (batch size 10). Handlers are async, as PgQueuer expects.

`python -m bench.systems.pgqueuer_app [--drain] [--batch-size N]` calls
`pgqueuer.run(factory)` on uvloop, which is what `pgq run` does after parsing its flags:
pgqueuer 1.6.0's `pgq run` fails before starting under typer 0.29 ('str' object has no
attribute 'name' in setup_fancy_logger).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pgqueuer
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode

from bench.stamp import stamp


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(os.environ["BENCH_DATABASE_URL"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        """Does nothing: the drain workload measures the queue, not the work."""

    @pgq.entrypoint("stamp")
    async def stamp_start(job: Job) -> None:
        stamp(int(job.payload or b"0"))

    try:
        yield pgq
    finally:
        await connection.close()


def main(argv: list[str]) -> None:
    mode = QueueExecutionMode.drain if "--drain" in argv else QueueExecutionMode.continuous
    batch = int(argv[argv.index("--batch-size") + 1]) if "--batch-size" in argv else 10
    uvloop.run(pgqueuer.run(create, mode=mode, batch_size=batch))


if __name__ == "__main__":
    main(sys.argv[1:])
