"""Shared test helpers: wait on conditions (never sleep-and-hope) and run pgdyno processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent


def wait_until(predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.02,
               message: str = "condition") -> T:
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
            prefix="pgdyno-proc-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgdyno", *self.args],
            env=pgdyno_env(database_url, **env), stdout=self._log, stderr=subprocess.STDOUT,
            cwd=REPO_DIR, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 15.0) -> str:
        return wait_until(lambda: text in self.output() and self.output(), timeout,
                          message=f"{text!r} in the output of pgdyno {' '.join(self.args)}")

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
                + self.output()[-3000:]) from None

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


def worker(database_url: str, *queues: str, concurrency: int = 1, burst: bool = False,
           imports: Sequence[str] = ("sample_tasks",), extra: Sequence[str] = (),
           **env: str) -> PgdynoProcess:
    """Start `pgdyno worker` on `queues` (importing the sample tasks by default)."""
    args = ["worker", "--concurrency", str(concurrency)]
    for queue in queues:
        args += ["--queue", queue]
    for module in imports:
        args += ["--import", module]
    if burst:
        args.append("--burst")
    return PgdynoProcess([*args, *extra], database_url, **env)
