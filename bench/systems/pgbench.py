"""The limit: pgbench running the minimal SQL per job on a minimal table (bench/sql/limit_*).

Two variants: one job per transaction (INSERT | claim with SKIP LOCKED | DELETE) and 100 jobs
per statement. A pgbench client stands for a worker process; each client runs its share of
the jobs exactly (-t), so no client ever finds the queue empty. pgbench runs in prepared mode
(-M prepared), as a tuned queue would.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.MULTILINE)


@dataclass(frozen=True)
class PgbenchRun:
    jobs: int
    #: Wall time of the pgbench process (connections included), seconds.
    wall_s: float
    #: pgbench's own rate (scripts/s without connection time) times jobs per script.
    jobs_per_s: float


class Pgbench:
    """One variant of the limit; `batch` is the number of jobs per statement (1 or 100)."""

    role = "limit"

    def __init__(self, binary: str, batch: int) -> None:
        self.binary = binary
        self.batch = batch
        self.name = f"pgbench-{batch}"

    def version(self) -> str:
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        ).stdout
        return out.strip().split()[-1] if out else "?"

    def describe(self) -> dict[str, object]:
        return {
            "scripts": f"bench/sql/limit_enqueue_{self.batch}.sql, "
            f"bench/sql/limit_drain_{self.batch}.sql",
            "mode": "pgbench -M prepared, one client per worker process",
        }

    def install(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute((SQL_DIR / "limit_schema.sql").read_text())  # type: ignore[arg-type]

    def prefill(self, url: str, count: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO limit_jobs (queue, task, args)"
                " SELECT 'bench', 'noop', '{}' FROM generate_series(1, %s)",
                (count,),
            )

    def pending(self, url: str) -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            return int(conn.execute("SELECT count(*) FROM limit_jobs").fetchone()[0])  # type: ignore[index]

    def hot_table(self) -> str:
        return "public.limit_jobs"

    def run(self, url: str, script: str, jobs: int, clients: int = 1) -> PgbenchRun:
        """Run `script` (limit_<script>_<batch>.sql) for `jobs` jobs split over `clients`."""
        scripts = jobs // self.batch
        if scripts % clients:
            raise ValueError(f"{jobs} jobs do not split evenly over {clients} clients")
        argv = [
            self.binary,
            "--no-vacuum",
            "-M",
            "prepared",
            "-f",
            str(SQL_DIR / f"limit_{script}_{self.batch}.sql"),
            "-c",
            str(clients),
            "-j",
            str(clients),
            "-t",
            str(scripts // clients),
            url,
        ]
        started = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
        wall = time.perf_counter() - started
        match = _TPS.search(result.stdout)
        if result.returncode != 0 or match is None:
            raise RuntimeError(
                f"pgbench failed ({result.returncode}): {(result.stderr or result.stdout)[-800:]}"
            )
        return PgbenchRun(jobs, wall, float(match.group(1)) * self.batch)
