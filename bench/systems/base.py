"""What the workloads need from a queue system, and the helpers every adapter shares.

The workloads (bench/workloads.py) are written once against QueueSystem; each adapter drives
its system through that system's own public API and CLI, with its documented defaults. An
adapter never reaches into another system's tables, and the workloads never into any.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import psycopg

REPO_DIR = Path(__file__).resolve().parents[2]
#: The queue (or entrypoint, for PgQueuer) every benchmark job goes to.
QUEUE = "bench"
#: Tasks every system registers: "noop" does nothing, "stamp" records its start (bench.stamp).
NOOP, STAMP = "noop", "stamp"

Role = Literal["subject", "peer", "limit"]


@dataclass(frozen=True)
class WorkerCommand:
    """How to start one worker process of a system (argv and extra environment)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Completions:
    """When jobs were completed, by the system's own record of it (database clock)."""

    count: int
    first: float | None  # unix time
    last: float | None


class Producer(Protocol):
    """A client connection that enqueues, for the timed enqueue and latency workloads."""

    def single(self, count: int) -> float:
        """Enqueue `count` no-op jobs, one transaction each; returns the seconds it took."""
        ...

    def bulk(self, count: int) -> float:
        """Enqueue `count` no-op jobs through the system's bulk API; returns the seconds."""
        ...

    def stamped(self, keys: Sequence[int]) -> float:
        """Enqueue one "stamp" job per key in one transaction; returns time.time() at commit."""
        ...

    def close(self) -> None: ...


class QueueSystem(Protocol):
    name: str
    role: Role

    def version(self) -> str: ...

    def describe(self) -> dict[str, object]:
        """The settings this system runs with in the benchmark (printed with the figures)."""
        ...

    def install(self, url: str) -> None:
        """Install the system's schema into an empty database (the per-system template)."""
        ...

    def prefill(self, url: str, count: int) -> None:
        """Enqueue `count` no-op jobs as fast as the system's bulk API allows (untimed)."""
        ...

    def producer(self, url: str) -> Producer: ...

    def worker(self, url: str, *, drain: bool, concurrency: int | None = None) -> WorkerCommand:
        """One worker process; with `drain` it exits once the queue is empty.

        `concurrency` None means the setting the benchmark uses for this system.
        """
        ...

    def pending(self, url: str) -> int:
        """Jobs enqueued and not yet done."""
        ...

    def completions(self, url: str, since: float = 0.0) -> Completions:
        """Jobs completed at or after unix time `since`, by the system's own records."""
        ...

    def hot_table(self) -> str:
        """The table the claim query works on (size and dead tuples are measured there)."""
        ...


def python() -> str:
    """The interpreter of this venv (worker processes run with the same one)."""
    return sys.executable


def venv_bin(name: str) -> str:
    """A console script installed next to the interpreter (pgdyno, pgq, procrastinate)."""
    return str(Path(sys.executable).parent / name)


def byte_compile() -> None:
    """Byte-compile pgdyno and the bench's own modules (the systems' apps), as `pip install`
    does for an installed package, so that every worker process starts from bytecode as a
    user's would. The checkout is an editable install, which pip does not compile; with
    PYTHONDONTWRITEBYTECODE set (as in some shells and containers) nothing wrote the .pyc
    files either, and each pgdyno worker compiled its ~60 modules from source at launch (35-60
    ms of W1's start-up), a cost no installed pgdyno pays. The peers come from site-packages,
    compiled when pip installed them. Unchanged sources keep their .pyc; a folder that cannot
    be written is left as it is."""
    import compileall

    for package in ("pgdyno", "bench"):
        compileall.compile_dir(REPO_DIR / package, quiet=2)


def child_env(url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for worker processes: the database, the repo importable, no stray config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PGDYNO_", "PROCRASTINATE_", "PGQUEUER_", "HEROKU_", "PG"))
    }
    env.pop("DYNO", None)
    env.pop("DATABASE_URL", None)
    env.update({"BENCH_DATABASE_URL": url, "PYTHONPATH": str(REPO_DIR), **(extra or {})})
    return env


def scalar(url: str, query: str, params: Sequence[object] = ()) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return None if row is None else row[0]


def analyze(url: str) -> None:
    """Fresh statistics after a pre-fill, so every system's planner starts informed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
