"""Memory: a report far bigger than the worker's memory budget runs in flat memory.

The worker is a separate process and its peak RSS is read from outside, from /proc/PID/status
(VmHWM: the highest RSS the kernel saw), while it is still alive after the job.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import wait_until, worker
from reports_support import job, write_report

import pgdyno

ROWS = 2_000_000
LIMIT_BYTES = 150 * 2**20
# About 115 bytes of CSV per row: some 230 MB in all.
BIG = """
    SELECT g AS id, md5(g::text) AS hash, 'customer ' || g AS name,
           timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' AS at,
           g * 1.5 AS amount, repeat('x', 20) AS pad
      FROM generate_series(1, %(rows)s) AS g
"""


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


@pytest.mark.slow
def test_a_two_million_row_report_runs_in_under_150_mb(conn, database_url, tmp_path):
    folder = tmp_path / "reports"
    write_report(folder, "big", "-- param: rows integer\n" + BIG)
    job_id = pgdyno.enqueue(
        conn, "report", {"name": "big", "params": {"rows": ROWS}}, queue="reports"
    )
    with worker(database_url, "reports", imports=(), PGDYNO_REPORTS_DIR=str(folder)) as proc:
        wait_until(
            lambda: job(conn, job_id)["status"] in ("done", "failed"),
            timeout=120,
            interval=0.2,
            message="the big report to finish",
        )
        peak = _peak_rss(proc.pid)  # the worker is still running: read it from outside
        proc.signal(15)
        assert proc.wait() == 0
    result = job(conn, job_id)["result"]
    assert result is not None, job(conn, job_id)["last_error"]
    print(
        f"\nworker peak RSS {peak / 2**20:.1f} MiB (VmHWM from /proc), in-job figure "
        f"{result['worker_peak_rss_bytes'] / 2**20:.1f} MiB; {result['rows']:,} rows, "
        f"{result['csv_bytes'] / 1e6:.0f} MB CSV, {result['stored_bytes'] / 1e6:.0f} MB "
        f"stored, {result['duration_s']:.1f}s"
    )
    assert result["rows"] == ROWS
    assert result["csv_bytes"] > 200e6
    assert peak < LIMIT_BYTES
    assert result["worker_peak_rss_bytes"] <= peak
    stored = conn.execute("SELECT sum(octet_length(data)) FROM pgdyno.report_chunks").fetchone()
    assert stored[0] == result["stored_bytes"]
