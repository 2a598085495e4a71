"""Report throughput and worker memory: `python -m bench.reports`.

Runs the demo's orders_export report (orders joined to customers, in id order) for 1M, 2M and
5M rows on a throwaway embedded Postgres (fsync on), each time in a fresh `pgdyno worker`
process, storing to Postgres and to a directory. The floor is psql's `\\copy` of the very same
query to /dev/null, measured in the same run: the server's cost of producing the CSV, with no
compression and no storage. The worker's peak RSS is read from outside (/proc/PID/status
VmHWM) and should stay flat as the result grows.

Prints a table; writes JSON to bench/results/reports-<timestamp>.json. About two minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEMO_REPORTS = REPO / "pgdyno" / "demo" / "reports"
RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (1_000_000, 2_000_000, 5_000_000)
REPORT = "orders_export"
QUEUE = "bench_reports"


@dataclass
class Run:
    rows: int
    store: str  # "psql floor", "postgres" or "directory"
    seconds: float
    csv_bytes: int | None = None
    stored_bytes: int | None = None
    #: Peak RSS of the worker process, read from /proc/PID/status (VmHWM) after the job.
    worker_peak_rss_bytes: int | None = None
    #: The same peak as the job itself recorded it (reset when the report started).
    job_peak_rss_bytes: int | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def csv_mb_per_s(self) -> float | None:
        return None if self.csv_bytes is None else self.csv_bytes / 1e6 / self.seconds


def _peak_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _query(conn: Any, rows: int) -> str:
    """The report's SQL with its parameters quoted exactly as the worker quotes them."""
    import psycopg

    from pgdyno.reports import catalog

    report = catalog.load(DEMO_REPORTS, REPORT)
    text = psycopg.ClientCursor(conn).mogrify(report.sql, report.bind({"limit": rows}))
    return " ".join(text.split())


def psql_floor(psql: str, url: str, query: str, rows: int) -> Run:
    started = time.monotonic()
    subprocess.run(
        [
            psql,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            f"\\copy ({query}) to '/dev/null' csv header",
        ],
        check=True,
    )
    return Run(rows, "psql floor", time.monotonic() - started)


def worker_run(conn: Any, url: str, rows: int, store: str, output_dir: Path) -> Run:
    """Enqueue the report, run it in a fresh worker process, read the worker's peak RSS."""
    import pgdyno
    from pgdyno import queue

    args: dict[str, Any] = {"name": REPORT, "params": {"limit": rows}}
    if store != "postgres":
        args["store"] = store
    job_id = pgdyno.enqueue(conn, "report", args, queue=QUEUE)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PGDYNO_REPORTS_DIR": str(DEMO_REPORTS),
        "PGDYNO_REPORTS_OUTPUT_DIR": str(output_dir),
        "PGDYNO_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgdyno", "worker", "--queue", QUEUE], env=env, cwd=REPO
    )
    try:
        deadline = time.monotonic() + 600
        while (job := queue.get_job(conn, job_id))["status"] not in ("done", "failed"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"report job {job_id} did not finish: {job['status']}")
            time.sleep(0.1)
        peak = _peak_rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    if job["status"] != "done":
        raise RuntimeError(f"report job {job_id} failed: {job['last_error']}")
    result = job["result"]
    for path in output_dir.glob("*.csv.gz"):
        path.unlink()
    queue.prune(conn, 0)  # deletes the job, and with it the stored chunks
    return Run(
        rows,
        store,
        result["duration_s"],
        result["csv_bytes"],
        result["stored_bytes"],
        peak,
        result["worker_peak_rss_bytes"],
    )


def _mb(count: int | None) -> str:
    return "-" if count is None else f"{count / 2**20:.1f}"


def table(runs: list[Run]) -> str:
    floors = {run.rows: run.seconds for run in runs if run.store == "psql floor"}
    lines = [
        f"{'rows':>10}  {'store':<10}  {'seconds':>7}  {'rows/s':>10}  {'CSV MB/s':>8}  "
        f"{'CSV MB':>7}  {'stored MB':>9}  {'peak RSS MiB':>12}  {'x floor':>7}"
    ]
    for run in runs:
        mb_s = run.csv_mb_per_s
        csv_mb = None if run.csv_bytes is None else run.csv_bytes / 1e6
        lines.append(
            f"{run.rows:>10,}  {run.store:<10}  {run.seconds:>7.2f}  {run.rows_per_s:>10,.0f}  "
            f"{'-' if mb_s is None else f'{mb_s:.1f}':>8}  "
            f"{'-' if csv_mb is None else f'{csv_mb:.1f}':>7}  "
            f"{'-' if run.stored_bytes is None else f'{run.stored_bytes / 1e6:.1f}':>9}  "
            f"{_mb(run.worker_peak_rss_bytes):>12}  {run.seconds / floors[run.rows]:>7.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reports",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        help="comma-separated row counts (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))

    import psycopg

    from pgdyno.demo import shop as demo
    from pgdyno.migrate import migrate
    from pgdyno.platform.postgres import EmbeddedPostgres

    started = datetime.now(UTC)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="pgdyno-bench-reports-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")  # fsync on: the server's default
        url = server.start()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
                clock = time.monotonic()
                demo.seed(conn, customers=20_000, orders=max(sizes))
                seed_s = time.monotonic() - clock
                print(f"seeded {max(sizes):,} orders in {seed_s:.1f}s", file=sys.stderr)
                version = conn.execute("SHOW server_version").fetchone()[0]
                for rows in sizes:
                    runs.append(psql_floor(server.binary("psql"), url, _query(conn, rows), rows))
                    for store in ("postgres", "directory"):
                        runs.append(worker_run(conn, url, rows, store, Path(tmp) / "out"))
                        print(f"{rows:,} rows, {store}: {runs[-1].seconds:.2f}s", file=sys.stderr)
        finally:
            server.destroy()

    sizes_seen = {run.rows: run.csv_bytes for run in runs if run.csv_bytes is not None}
    for run in runs:  # same query, same CSV: the floor's MB/s uses the size the worker counted
        if run.store == "psql floor":
            run.csv_bytes = sizes_seen.get(run.rows)
    print(table(runs))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"reports-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "reports",
                "started_at": started.isoformat(),
                "postgres": version,
                "report": REPORT,
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "seed_seconds": round(seed_s, 2),
                "runs": [
                    {
                        **asdict(run),
                        "rows_per_s": round(run.rows_per_s),
                        "csv_mb_per_s": run.csv_mb_per_s,
                    }
                    for run in runs
                ],
            },
            indent=2,
        )
    )
    print(f"\nJSON: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
