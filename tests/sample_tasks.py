"""Tasks the tests' worker processes import (--import sample_tasks, with tests/ on the path)."""

from __future__ import annotations

import os
import threading
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


_local = threading.local()


def _thread_connection() -> psycopg.Connection:
    """One connection per executor thread, so a cheap task costs one INSERT, not a connect."""
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    return conn


@pgdyno.task("touch")
def touch(key: str) -> None:
    """The cheapest side effect that can be counted: one row in test_effects."""
    _thread_connection().execute(
        "INSERT INTO test_effects (kind, job_key, pid) VALUES ('touch', %s, %s)", (key, os.getpid())
    )


@pgdyno.task("gate")
def gate(key: str) -> dict[str, object]:
    """Record 'start', wait until the test records ('open', key), record 'done'.

    Lets a test act (signal, kill) while the job is certainly running, and decide when it ends.
    """
    _record("start", key, attempt=pgdyno.current_job().attempt)
    while not _gate_is_open(key):
        time.sleep(0.02)
    _record("done", key)
    return {"key": key}


def _gate_is_open(key: str) -> bool:
    """Whether the test opened the gate; False while Postgres is unreachable (a restart test)."""
    try:
        return bool(
            _thread_connection()
            .execute("SELECT 1 FROM test_effects WHERE kind = 'open' AND job_key = %s", (key,))
            .fetchone()
        )
    except psycopg.OperationalError:
        _local.conn = None
        return False


@pgdyno.task("whoami")
def whoami() -> dict[str, object]:
    """What current_job() tells a running task."""
    job = pgdyno.current_job()
    return {
        "id": job.id,
        "queue": job.queue,
        "task": job.task,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
    }


@pgdyno.task("not_a_number")
def not_a_number() -> float:
    """A return value JSON (and so the result column) cannot hold."""
    return float("nan")


@pgdyno.task("cooperative")
def cooperative(key: str, limit: float = 60.0) -> str:
    """Record 'start', then check current_job().cancel_requested until it is set (at most
    `limit` seconds), record 'cancel_seen' and return, as a cooperative long task would."""
    _record("start", key)
    job = pgdyno.current_job()
    deadline = time.monotonic() + limit
    while not job.cancel_requested and time.monotonic() < deadline:
        time.sleep(0.02)
    _record("cancel_seen" if job.cancel_requested else "not_cancelled", key)
    return "stopped early"
