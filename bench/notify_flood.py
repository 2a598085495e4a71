"""NOTIFY flood: the CPU an idle worker spends while another role floods `pgdyno_jobs`.

Any role may `NOTIFY pgdyno_jobs, '<queue>'` as often as it likes. This starts a throwaway
embedded Postgres, migrates, starts one idle `pgdyno worker --queue q`, measures the worker's
CPU seconds over --seconds of quiet, then over --seconds while --connections clients send
`NOTIFY pgdyno_jobs, 'q'` in a loop (each its own transaction, so none is folded into another),
and measures how soon the jobs enqueued during the flood (one a second) are claimed.

Run: python -m bench.notify_flood [--seconds 10] [--connections 2]
Prints the figures and writes bench/results/notify_flood-<timestamp>.json. The worker runs the
pgdyno found first on the path of the current directory (run it from another checkout to
measure another version).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from pgdyno.migrate import migrate
from pgdyno.platform.postgres import EmbeddedPostgres

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.001)


def flood(url: str, seconds: float, connections: int) -> int:
    """NOTIFY pgdyno_jobs, 'q' from `connections` clients for `seconds`; how many were sent."""
    counts = [0] * connections
    stop = time.monotonic() + seconds

    def send(slot: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < stop:
                conn.execute("NOTIFY pgdyno_jobs, 'q'")
                counts[slot] += 1

    threads = [threading.Thread(target=send, args=(slot,)) for slot in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def measure(url: str, seconds: float, connections: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PGDYNO_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.getcwd(),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgdyno", "worker", "--queue", "q"],
        env=env,
        cwd=os.getcwd(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            wait(
                lambda: conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'pgdyno listen %' AND query LIKE 'LISTEN%'"
                ).fetchone()[0]
            )
            time.sleep(1.0)  # start-up's own CPU is over
            before = cpu_seconds(worker.pid)
            time.sleep(seconds)
            idle = cpu_seconds(worker.pid) - before
            before = cpu_seconds(worker.pid)
            sent: list[int] = []
            flooding = threading.Thread(
                target=lambda: sent.append(flood(url, seconds, connections))
            )
            flooding.start()
            latencies = []
            for _ in range(max(int(seconds) - 1, 1)):  # a job a second, during the flood
                time.sleep(0.9)
                enqueued = time.monotonic()
                job = conn.execute(
                    "INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 'noop') RETURNING id"
                ).fetchone()[0]
                wait(
                    lambda job=job: conn.execute(
                        "SELECT status <> 'ready' FROM pgdyno.jobs WHERE id = %s", (job,)
                    ).fetchone()[0]
                )
                latencies.append((time.monotonic() - enqueued) * 1000)
            flooding.join()
            flooded = cpu_seconds(worker.pid) - before
        return {
            "seconds": seconds,
            "connections": connections,
            "notifications": sent[0],
            "notifications_per_s": round(sent[0] / seconds),
            "worker_cpu_idle_s": round(idle, 3),
            "worker_cpu_flood_s": round(flooded, 3),
            "claim_during_flood_ms_median": round(statistics.median(latencies), 1),
            "claim_during_flood_ms_max": round(max(latencies), 1),
            "worker_exit_code": worker.poll(),
        }
    finally:
        worker.terminate()
        worker.wait(30)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notify_flood", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=2)
    args = parser.parse_args(argv)
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="pgdyno-bench-flood-")) / "pg")
    try:
        url = server.start()
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        result = measure(url, args.seconds, args.connections)
    finally:
        server.destroy()
    for key, value in result.items():
        print(f"{key:>30}: {value}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"notify_flood-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
