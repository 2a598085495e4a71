"""Tasks the tests' worker processes import (--import sample_tasks, with tests/ on the path)."""

from __future__ import annotations

import os
import time

import psycopg

import pgdyno


def _record(kind: str, job_key: str, **extra: object) -> None:
    """Write a side effect into the test database (one row per execution)."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO test_effects (kind, job_key, pid, extra) VALUES (%s, %s, %s, %s)",
            (kind, job_key, os.getpid(), psycopg.types.json.Jsonb(extra)),
        )


@pgdyno.task("noop")
def noop(**_: object) -> None:
    return None


@pgdyno.task("record")
def record(key: str, sleep: float = 0.0) -> dict[str, object]:
    _record("start", key)
    if sleep:
        time.sleep(sleep)
    _record("done", key)
    return {"key": key}


@pgdyno.task("boom")
def boom(message: str = "kaboom") -> None:
    _record("attempt", message)
    raise RuntimeError(message)


@pgdyno.task("permanent")
def permanent() -> None:
    raise pgdyno.PermanentJobError("this cannot work")
