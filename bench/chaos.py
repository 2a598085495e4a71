"""The chaos soak: `python -m bench.chaos [--duration 5m] [--seed N] [--logs DIR]`.

For the duration (default 5 minutes) a feeder keeps queue `chaos` fed (single INSERTs by psql
and bulk enqueues of 1-6 jobs) with `chaos.work` jobs (bench/chaos_tasks.py: most instant,
some slow, 10% of attempts failing; one job in five with 2 attempts, the others 5), three
workers run them (two in the process pool, one in the thread pool; concurrency 4, lease 8 s),
and faults are injected one after another, each once the system has recovered from the last:
kill -9 a worker, SIGTERM a worker (grace 2 s), restart Postgres (`fast`, and once
`immediate`), pg_terminate_backend the workers' connections, kill -9 a job's own process. A
killed or stopped worker is started again.

Then the feeder stops, the queue drains, and everything is accounted exactly (bench/
chaos_report.py): jobs enqueued (and in doubt: an enqueue whose reply was lost), jobs lost,
jobs stranded ready or running, executions interrupted and jobs completed twice, each
attributed to the fault that killed the process running it, attempts above max_attempts,
recovery time per fault kind, the hot table's size at the end. Prints a table; writes JSON to
bench/results/chaos-<timestamp>.json; exits 1 unless 0 lost, 0 stranded, nothing
unattributed. The test suite runs a short soak (tests/acceptance/test_chaos.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

import pgdyno
from bench import chaos_report
from bench.chaos_report import Fault
from pgdyno.config import parse_duration
from pgdyno.migrate import migrate
from pgdyno.platform.postgres import EmbeddedPostgres

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
QUEUE = "chaos"
POOLS = ("process", "process", "thread")
LEASE_S = 8.0
WORKER_ARGS = ["--concurrency", "4", "--lease", f"{LEASE_S:g}s", "--poll-interval", "500ms"]
WORKER_ARGS += ["--grace", "2s", "--import", "bench.chaos_tasks", "--queue", QUEUE]
#: Job durations drawn by the feeder (seconds): mostly instant, some slow.
DURATIONS = (0, 0, 0, 0, 0, 0, 0.1, 0.1, 1.0, 3.0)
FAIL_P = 0.1
KINDS = ("kill9", "sigterm", "pg_restart_fast", "terminate_backends", "kill_child")
EFFECTS_TABLE = """
CREATE TABLE chaos_effects (
    job_id bigint NOT NULL, attempt integer NOT NULL, pid integer NOT NULL,
    kind text NOT NULL, worker_pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, attempt, pid, kind))"""


class Workers:
    """The three worker processes, each in a session of its own, started again when they exit
    (until `stop`)."""

    def __init__(self, url: str, logs: Path) -> None:
        self.url, self.logs = url, logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0
        self._stopping = False
        self._lock = threading.Lock()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PGDYNO_", "DYNO"))}
        env.update(
            DATABASE_URL=url,
            PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
            PGDYNO_RETRY_BASE="200ms",
            PGDYNO_RETRY_MAX="2s",
            PYTHONUNBUFFERED="1",
        )
        self._env = env
        for slot in range(len(POOLS)):
            self.procs.append(self._spawn(slot))
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        self.started += 1
        with (self.logs / f"worker-{slot}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "pgdyno", "worker", "--pool", POOLS[slot], *WORKER_ARGS],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _supervise(self) -> None:
        while not self._stopping:
            with self._lock:
                for slot, proc in enumerate(self.procs):
                    if proc.poll() is not None and not self._stopping:
                        self.procs[slot] = self._spawn(slot)
            time.sleep(0.2)

    def pids(self) -> list[int]:
        with self._lock:
            return [proc.pid for proc in self.procs]

    def signal(self, slot: int, signum: int) -> int:
        with self._lock:
            proc = self.procs[slot]
            proc.send_signal(signum)
            return proc.pid

    def stop(self) -> None:
        self._stopping = True
        self._thread.join()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


class Feeder(threading.Thread):
    """Enqueues `chaos.work` jobs every 0.3 s: 30% single INSERTs by psql, else bulk enqueues
    of 1-6 jobs. `acknowledged`: job numbers whose enqueue returned; `in_doubt`: those whose
    enqueue failed (its commit may or may not have happened)."""

    def __init__(self, url: str, psql: str, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.url, self.psql, self.rng = url, psql, rng
        self.acknowledged: set[int] = set()
        self.in_doubt: set[int] = set()
        self.singles = self.bulks = 0
        self._next = 0
        self._halt = threading.Event()
        self._conn: psycopg.Connection | None = None

    def _jobs(self, count: int) -> list[dict[str, Any]]:
        jobs = []
        for _ in range(count):
            self._next += 1
            seconds = self.rng.choice(DURATIONS)
            jobs.append({"n": self._next, "seconds": seconds, "fail_p": FAIL_P})
        return jobs

    def _attempts(self, args: dict[str, Any]) -> int | None:
        """One job in five may run twice at most (the others: the default budget, 5)."""
        return 2 if args["n"] % 5 == 0 else None

    def _single(self, args: dict[str, Any]) -> None:
        attempts = self._attempts(args) or "DEFAULT"
        sql = (
            f"INSERT INTO pgdyno.jobs (queue, task, args, max_attempts) VALUES ('{QUEUE}',"
            f" 'chaos.work', '{json.dumps(args)}', {attempts}) RETURNING id"
        )
        out = subprocess.run(
            [self.psql, self.url, "-qtAX", "-c", sql], capture_output=True, text=True, timeout=30
        )
        if out.returncode != 0 or not out.stdout.strip():
            raise psycopg.OperationalError(out.stderr.strip())
        self.singles += 1

    def _bulk(self, jobs: list[dict[str, Any]]) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        specs = [
            pgdyno.JobSpec("chaos.work", args, QUEUE, max_attempts=self._attempts(args))
            for args in jobs
        ]
        pgdyno.enqueue_many(self._conn, specs)
        self.bulks += 1

    def run(self) -> None:
        while not self._halt.wait(0.3):
            single = self.rng.random() < 0.3
            jobs = self._jobs(1 if single else self.rng.randint(1, 6))
            try:
                self._single(jobs[0]) if single else self._bulk(jobs)
            except (psycopg.Error, pgdyno.PgdynoError, subprocess.TimeoutExpired):
                if not single and self._conn is not None:
                    self._conn.close()  # broken: a new one next time
                self.in_doubt.update(job["n"] for job in jobs)
                continue
            self.acknowledged.update(job["n"] for job in jobs)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()
        if self._conn is not None:
            self._conn.close()


def _admin(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on a connection of its own, retried while Postgres restarts."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                cur = conn.execute(query, params)  # type: ignore[arg-type]
                return cur.fetchall() if cur.description else []
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _listening(url: str, pids: list[int]) -> bool:
    """Whether each of the workers `pids` LISTENs (its session is back)."""
    names = [
        row[0]
        for row in _admin(
            url,
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'pgdyno listen %%' AND query LIKE 'LISTEN%%'",
        )
    ]
    return all(any(f":{pid}:" in name for name in names) for pid in pids)


class Chaos:
    """Injects one fault at a time, and measures how long the system took to recover."""

    def __init__(self, server: EmbeddedPostgres, url: str, workers: Workers, rng: random.Random):
        self.server, self.url, self.workers, self.rng = server, url, workers, rng
        self.faults: list[Fault] = []

    def _running_jobs(self, worker_pid: int) -> list[int]:
        rows = _admin(
            self.url,
            "SELECT id FROM pgdyno.jobs WHERE status = 'running' AND worker LIKE %s",
            (f"%:{worker_pid}:%",),
        )
        return [row[0] for row in rows]

    def inject(self, kind: str) -> Fault | None:
        """Inject a fault of `kind` and wait until every worker LISTENs again (None: there
        was nothing to hit, no job running in a child process)."""
        started = time.monotonic()
        fault = Fault(kind=kind, at=time.time())
        if kind in ("kill9", "sigterm"):
            slot = self.rng.randrange(len(POOLS))
            fault.target = self.workers.pids()[slot]
            fault.jobs = self._running_jobs(fault.target)
            fault.detail = POOLS[slot]
            self.workers.signal(slot, signal.SIGKILL if kind == "kill9" else signal.SIGTERM)
        elif kind.startswith("pg_restart"):
            fault.detail = "immediate" if kind.endswith("immediate") else "fast"
            self.server.restart(fault.detail)
        elif kind == "terminate_backends":
            rows = _admin(
                self.url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'pgdyno %%'",
            )
            fault.detail = f"{len(rows)} connections"
        elif kind == "kill_child" and not self._kill_child(fault):
            return None  # no job ran in a child process: nothing injected
        self.faults.append(fault)
        deadline = started + 60
        while time.monotonic() < deadline:
            pids = self.workers.pids()
            # A stopped worker must be gone and replaced (not still in its grace period).
            replaced = kind not in ("kill9", "sigterm") or fault.target not in pids
            if replaced and _listening(self.url, pids):
                break
            time.sleep(0.1)
        fault.recovered_s = round(time.monotonic() - started, 2)
        return fault

    def _kill_child(self, fault: Fault) -> bool:
        """kill -9 the process of a running job of a process-pool worker."""
        workers = [
            pid for pid, pool in zip(self.workers.pids(), POOLS, strict=True) if pool == "process"
        ]
        rows = _admin(
            self.url,
            "SELECT s.job_id, s.pid FROM chaos_effects AS s JOIN pgdyno.jobs AS j"
            " ON j.id = s.job_id AND j.status = 'running' AND j.attempts = s.attempt"
            " WHERE s.kind = 'start' AND s.worker_pid = ANY(%s) AND s.pid <> s.worker_pid"
            " AND NOT EXISTS (SELECT 1 FROM chaos_effects AS e WHERE e.job_id = s.job_id"
            "     AND e.attempt = s.attempt AND e.pid = s.pid AND e.kind <> 'start')",
            (workers,),
        )
        for job_id, pid in rows:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            fault.target, fault.jobs = pid, [job_id]
            return True
        return False


def _drain(url: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        left = _admin(
            url,
            "SELECT count(*) FROM pgdyno.jobs WHERE queue = %s AND status IN ('ready', 'running')",
            (QUEUE,),
        )[0][0]
        if left == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def run(
    duration: float = 300.0,
    *,
    server: EmbeddedPostgres | None = None,
    seed: int | None = None,
    drain_timeout: float = 120.0,
    logs: Path | None = None,
    say: Any = print,
) -> dict[str, Any]:
    """Run the soak for `duration` seconds of faults on `server` (default: a throwaway one)
    and return the accounting (bench/chaos_report.py). The workers' logs go to `logs`
    (default: a temporary folder, removed)."""
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="pgdyno-chaos-") as tmp:
        own = server is None
        if server is None:
            server = EmbeddedPostgres(Path(tmp) / "pg", settings={"fsync": "off"})
        server.start()
        database = f"chaos_{os.getpid()}_{int(time.time())}"
        _admin(server.url(), f'CREATE DATABASE "{database}"')
        url = server.url(database)
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            conn.execute(EFFECTS_TABLE)
        logs = logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        workers = Workers(url, logs)
        feeder = Feeder(url, server.binary("psql"), rng)
        chaos = Chaos(server, url, workers, rng)
        try:
            while not _listening(url, workers.pids()):
                time.sleep(0.1)
            feeder.start()
            started = time.monotonic()
            plan = [*KINDS]
            rng.shuffle(plan)
            plan.insert(rng.randrange(len(plan) + 1), "pg_restart_immediate")
            while time.monotonic() - started < duration:
                time.sleep(rng.uniform(0.5, 2.0))
                if not plan:
                    plan = [*KINDS]
                    rng.shuffle(plan)
                kind = plan.pop(0)
                fault = chaos.inject(kind)
                if fault is None:
                    plan.append(kind)  # try again later
                    continue
                say(f"  {time.monotonic() - started:6.1f}s {fault.describe()}")
            feeder.stop()
            drain_s = _drain(url, drain_timeout)
        finally:
            try:
                feeder.stop()
            finally:
                workers.stop()  # whatever happened: no worker outlives the soak
        result = chaos_report.account(url, feeder, chaos.faults, lease_s=LEASE_S)
        result.update(
            seed=seed,
            duration_s=duration,
            drain_s=round(drain_s, 1),
            workers=list(POOLS),
            worker_starts=workers.started,
            events=chaos_report.count_events(logs),
        )
        if own:
            server.destroy()
        else:
            _admin(server.url(), f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", default="5m", help="time under faults (default 5m)")
    parser.add_argument("--seed", type=int, default=None, help="the random seed (printed)")
    parser.add_argument("--logs", type=Path, default=None, help="keep the workers' logs here")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    result = run(parse_duration(args.duration, "--duration"), seed=args.seed, logs=args.logs)
    print(chaos_report.table(result))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"chaos-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    meta = {"benchmark": "chaos", "started_at": started.isoformat(), "cpus": os.cpu_count()}
    out.write_text(json.dumps({**meta, "load_average": os.getloadavg(), **result}, indent=2))
    print(f"\nJSON: {out.relative_to(REPO)}")
    return 0 if chaos_report.healthy(result) else 1


if __name__ == "__main__":
    sys.exit(main())
