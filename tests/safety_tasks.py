"""Tasks that misbehave, for the worker-safety tests (--import safety_tasks, tests/ on the path).

Each records its side effects in test_effects (as tests/sample_tasks.py does), with the job's
attempt and the pid of the process that ran it (the job's own process in the process pool).
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import psycopg

import pgdyno


def _record(kind: str, key: str, **extra: object) -> None:
    """One row in test_effects; retried while Postgres is away (an outage test)."""
    job = pgdyno.current_job()
    fields = {"attempt": job.attempt, "job": job.id, "ppid": os.getppid(), **extra}
    while True:
        try:
            with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO test_effects (kind, job_key, pid, extra) VALUES (%s, %s, %s, %s)",
                    (kind, key, os.getpid(), psycopg.types.json.Jsonb(fields)),
                )
            return
        except psycopg.OperationalError:
            time.sleep(0.1)


def _is_open(key: str) -> bool:
    try:
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            return bool(
                conn.execute(
                    "SELECT 1 FROM test_effects WHERE kind = 'open' AND job_key = %s", (key,)
                ).fetchone()
            )
    except psycopg.OperationalError:
        return False  # Postgres is away: the gate stays shut


def _wait_for_gate(key: str) -> None:
    while not _is_open(key):
        time.sleep(0.05)


@pgdyno.task("safety.gate")
def gate(key: str) -> dict[str, object]:
    """Start, wait until the test opens the gate (surviving a Postgres outage), finish."""
    _record("start", key)
    _wait_for_gate(key)
    _record("done", key)
    return {"key": key}


@pgdyno.task("safety.fail_at_gate")
def fail_at_gate(key: str) -> None:
    """Start, wait for the gate, then fail."""
    _record("start", key)
    _wait_for_gate(key)
    raise RuntimeError(f"{key} failed on purpose")


#: Text Postgres refuses (built here: a lone surrogate cannot even travel in a job's args).
NASTY = {"nul": "a\x00b", "surrogate": "bad \ud800 text"}


@pgdyno.task("safety.raise_text")
def raise_text(key: str, nasty: str) -> None:
    """Raise a ValueError whose message holds NASTY[nasty]."""
    _record("start", key)
    raise ValueError(NASTY[nasty])


class BrokenMessage(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


@pgdyno.task("safety.broken_str")
def broken_str(key: str) -> None:
    _record("start", key)
    raise BrokenMessage()


@pgdyno.task("safety.tuple_keys")
def tuple_keys(key: str) -> dict[object, str]:
    _record("start", key)
    return {(1, 2): "pair"}


@pgdyno.task("safety.returns")
def returns(key: str, value: object = None, mib: int = 0, nasty: str | None = None) -> object:
    """Return `value`, a string of `mib` MiB, or {"text": NASTY[nasty]}."""
    _record("start", key)
    if nasty:
        return {"text": NASTY[nasty]}
    return "x" * (mib << 20) if mib else value


@pgdyno.task("safety.progress")
def progress(key: str, nasty: str) -> str:
    """Publish progress holding NASTY[nasty]; returns how that went."""
    _record("start", key)
    try:
        pgdyno.current_job().set_progress(note=NASTY[nasty])
    except ValueError as exc:
        return f"refused: {exc}"
    return "published"


@pgdyno.task("safety.sleep")
def sleep(key: str, seconds: float) -> str:
    _record("start", key)
    time.sleep(seconds)
    _record("done", key)
    return key


@pgdyno.task("safety.hold_gil")
def hold_gil(key: str, seconds: int) -> str:
    """Hold the GIL for `seconds`: libc's sleep() called through ctypes.PyDLL, which does not
    release the GIL (as a long regex match or a C extension would not)."""
    _record("start", key)
    ctypes.PyDLL(None).sleep(seconds)
    _record("done", key)
    return key


@pgdyno.task("safety.crash")
def crash(key: str) -> None:
    """Die the hard way: SIGSEGV, as a crashing C extension would."""
    _record("start", key)
    os.kill(os.getpid(), signal.SIGSEGV)


@pgdyno.task("safety.hog")
def hog(key: str, mib: int) -> int:
    """Touch `mib` MiB of memory and keep it a while."""
    _record("start", key)
    block = bytearray(mib << 20)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    time.sleep(5)
    _record("done", key)
    return len(block)
