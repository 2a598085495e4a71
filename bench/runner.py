"""What every workload shares: the run's options, databases, worker processes, CPU accounting.

Worker processes are started from each system's WorkerCommand with their output in a log
file under the run's work directory (never on the terminal), and reaped with os.wait4 so the
CPU time and peak memory each used are known. Nothing here knows any system's tables.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.server import BenchServer
from bench.systems.base import QueueSystem, WorkerCommand, child_env
from bench.systems.pgdyno import DRAIN_CONCURRENCY


@dataclass(frozen=True)
class Options:
    """Workload sizes (issue 5's by default; smaller ones are for development only)."""

    drain_jobs: int = 20_000
    single_jobs: int = 5_000
    bulk_jobs: int = 20_000
    latency_jobs: int = 200
    latency_spacing_s: float = 0.020
    steady_s: float = 60.0
    #: Jobs/s for the steady state; None: half of pgdyno's measured 1-worker drain rate.
    steady_rate: float | None = None
    warmup_jobs: int = 1_000
    #: pgdyno worker --concurrency in every workload (a public flag; reported).
    pgdyno_concurrency: int = DRAIN_CONCURRENCY
    #: The longest a drain or a catch-up may take before the run gives up on a system.
    timeout_s: float = 120.0


@dataclass
class Context:
    server: BenchServer
    options: Options
    systems: list[Any]  # QueueSystem and Pgbench objects, in measuring order
    workdir: Path
    #: Results later benchmarks may use (e.g. "pgdyno.drain_rate_1w").
    shared: dict[str, float] = field(default_factory=dict)
    say: Callable[[str], None] = print
    _templates: dict[str, str] = field(default_factory=dict)

    def of_role(self, *roles: str) -> list[Any]:
        return [system for system in self.systems if system.role in roles]

    @contextlib.contextmanager
    def database(self, system: Any) -> Iterator[str]:
        """A fresh database with `system`'s schema, cloned from its template; dropped after."""
        template = self.server.template(f"tpl_{system.name.replace('-', '_')}", system.install)
        url = self.server.fresh_database(template, system.name.replace("-", "_"))
        try:
            yield url
        finally:
            self.server.drop_database(url)


@dataclass
class Worker:
    """A started worker process."""

    process: subprocess.Popen[bytes]
    log: Path
    started: float
    status: int | None = None
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0
    context_switches: int = 0  # voluntary + involuntary: a sign of thread hand-offs

    @property
    def pid(self) -> int:
        return self.process.pid

    def reap(self, timeout: float) -> int:
        """Wait for the process to exit (kill it after `timeout`); returns its exit status."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.process.returncode = os.waitstatus_to_exitcode(status)
                self.status = self.process.returncode
                self.cpu_s = usage.ru_utime + usage.ru_stime
                self.max_rss_mb = usage.ru_maxrss / 1024
                self.context_switches = usage.ru_nvcsw + usage.ru_nivcsw
                break
            if time.monotonic() >= deadline:
                self.process.kill()
                deadline = float("inf")
            time.sleep(0.005)
        return self.status

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then reap."""
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        return self.reap(timeout)

    def tail(self, chars: int = 600) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def launch(
    ctx: Context, command: WorkerCommand, url: str, label: str, stamp_file: Path | None = None
) -> Worker:
    """Start one worker process; stdout and stderr go to a log file in the work directory."""
    extra = dict(command.env)
    if stamp_file is not None:
        extra["BENCH_STAMP_FILE"] = str(stamp_file)
    log = ctx.workdir / f"{label}.{time.monotonic_ns()}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command.argv,
            env=child_env(url, extra),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Worker(process, log, time.time())


def reap_all(workers: Sequence[Worker], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.reap(max(0.0, deadline - time.monotonic()))


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total / 2**20


class ServerCpu:
    """CPU seconds the Postgres server used over a window (postmaster, its children, reaped
    children included: backends of workers that exited still count)."""

    def __init__(self, server: BenchServer) -> None:
        pid_file = server.server.pgdata / "postmaster.pid"
        self.postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        self.start = self.total()

    def total(self) -> float:
        times = self.postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self.postmaster.children():
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        return total

    def used(self) -> float:
        return self.total() - self.start


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll `predicate` until truthy; returns its value, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest-rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def system_label(system: QueueSystem | Any) -> str:
    return f"{system.name} {system.version()}"
