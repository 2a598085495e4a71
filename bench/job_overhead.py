"""What running a job costs besides its task, in the thread pool and in the process pool.

Starts a throwaway embedded Postgres, migrates, then for each pool (`--pool thread`, then
`--pool process`, each a `pgdyno worker --concurrency 1` of its own):

- cold: one `overhead.hello` job with a 1 s timeout and a single attempt, enqueued before the
  worker starts (as when winston is at zero): how it ended (failed with JobTimeout if the
  worker's start counted against its timeout), and its claim-to-finish time;
- warm: --jobs hello jobs, one at a time, each enqueued and awaited as `pgdyno.result` does
  (the job is marked awaited in its enqueue's transaction; its finish sends NOTIFY
  pgdyno_finished): enqueue-to-notification times as a client sees them, and claim-to-finish
  times from the job's row (started_at to finished_at: the worker's part).

The process pool's overhead per job is the difference of the two pools' medians.

Run: python -m bench.job_overhead [--jobs 50]
Prints the figures and writes bench/results/job_overhead-<timestamp>.json. The workers run the
pgdyno found first on the path of the current directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from pgdyno.migrate import migrate
from pgdyno.platform.postgres import EmbeddedPostgres

RESULTS = Path(__file__).resolve().parent / "results"
ENQUEUE = (
    "INSERT INTO pgdyno.jobs (queue, task, timeout, max_attempts, awaited)"
    " VALUES ('q', 'overhead.hello', '1 second', %s, true) RETURNING id"
)


def worker(url: str, pool: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": url, "PGDYNO_LOG_LEVEL": "WARNING"}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    args = ["worker", "--queue", "q", "--concurrency", "1", "--pool", pool]
    return subprocess.Popen(
        [sys.executable, "-m", "pgdyno", *args, "--import", "bench.overhead_tasks"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def row(conn: psycopg.Connection, job_id: int) -> tuple[str, int, float | None]:
    found = conn.execute(
        "SELECT status::text, attempts,"
        " extract(epoch FROM finished_at - started_at) * 1000 FROM pgdyno.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert found is not None
    return found[0], found[1], None if found[2] is None else float(found[2])


def finished(conn: psycopg.Connection, job_id: int, timeout: float = 60.0) -> None:
    """Wait for the job's NOTIFY pgdyno_finished on `conn` (which listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for notify in conn.notifies(timeout=deadline - time.monotonic()):
            if notify.payload == str(job_id):
                return
    raise TimeoutError(f"job {job_id} did not finish")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)


def measure(url: str, pool: str, jobs: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN pgdyno_finished")
        cold = conn.execute(ENQUEUE, (1,)).fetchone()[0]
        started = time.monotonic()
        process = worker(url, pool)
        try:
            finished(conn, cold)
            cold_s = time.monotonic() - started
            cold_status, _, cold_run_ms = row(conn, cold)
            client_ms, worker_ms = [], []
            for _ in range(jobs):
                sent = time.monotonic()
                job = conn.execute(ENQUEUE, (5,)).fetchone()[0]
                finished(conn, job)
                client_ms.append((time.monotonic() - sent) * 1000)
                status, _, run_ms = row(conn, job)
                assert status == "done" and run_ms is not None, (status, run_ms)
                worker_ms.append(run_ms)
        finally:
            process.terminate()
            process.wait(60)
    return {
        "pool": pool,
        "cold_job_status": cold_status,
        "cold_worker_start_to_done_s": round(cold_s, 2),
        "cold_job_claim_to_finish_ms": None if cold_run_ms is None else round(cold_run_ms, 1),
        "jobs": jobs,
        "enqueue_to_done_ms_median": round(statistics.median(client_ms), 1),
        "enqueue_to_done_ms_p95": percentile(client_ms, 0.95),
        "enqueue_to_done_ms_max": round(max(client_ms), 1),
        "claim_to_finish_ms_median": round(statistics.median(worker_ms), 1),
        "claim_to_finish_ms_p95": percentile(worker_ms, 0.95),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.job_overhead", description=__doc__)
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pgdyno-bench-overhead-") as scratch:
        server = EmbeddedPostgres(Path(scratch) / "pg")
        try:
            url = server.start()
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
            pools = [measure(url, pool, args.jobs) for pool in ("thread", "process")]
        finally:
            server.destroy()
    thread, process = pools
    result = {
        "pools": pools,
        "process_pool_overhead_ms_median": round(
            process["enqueue_to_done_ms_median"] - thread["enqueue_to_done_ms_median"], 1
        ),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    for each in pools:
        print(f"--- --pool {each['pool']}")
        for key, value in each.items():
            print(f"{key:>32}: {value}")
    for key in ("process_pool_overhead_ms_median", "load_average", "cpus"):
        print(f"{key:>32}: {result[key]}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"job_overhead-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
