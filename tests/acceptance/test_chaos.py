"""The chaos soak, short (issue 11): bench/chaos.py for 35 s of faults on the fault server.

Three workers (two process-pool, one thread-pool) under a steady feed while workers are
killed with kill -9 and SIGTERM, Postgres restarts (fast, and once immediate), the workers'
connections are terminated and job processes are killed. Afterwards: no job lost, none
stranded, every interrupted execution and every double completion attributed to a kill, no
attempt above its budget, every kind of fault injected. `python -m bench.chaos` is the long
run (5 minutes by default), with the figures in the README.
"""

from __future__ import annotations

from pathlib import Path

from bench import chaos, chaos_report


def test_short_chaos_soak_loses_and_strands_nothing(fault_server, tmp_path: Path):
    logs = tmp_path / "logs"
    try:
        result = chaos.run(35, server=fault_server, drain_timeout=90, logs=logs, say=print)
    finally:
        fault_server.start()  # the next test gets a running server whatever happened
    print(chaos_report.table(result))
    failed = "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(logs.glob("*.log"))
    )
    assert (result["lost"], result["stranded"]) == (0, 0), failed
    assert result["unattributed"] == [], failed
    assert result["attempts_over_max"] == 0, failed
    assert set(result["faults"]) == set(chaos_report.LABELS), result["faults"]
    assert result["enqueued"] > 100
    assert result["events"]["job_rescued"] >= 1  # kill -9 was survived by a rescue
