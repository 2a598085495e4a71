"""The chaos soak's accounting and table (bench/chaos.py runs the soak).

Exact, from the database and the effects the tasks wrote (bench/chaos_tasks.py):
- enqueued: jobs whose enqueue returned; `in doubt`: enqueues that failed on the way (a lost
  reply: committed or not), with how many of them exist;
- lost: acknowledged jobs missing from pgdyno.jobs, or done without a completed execution;
- stranded: jobs still ready or running once the queue had time to drain;
- executions (job, attempt, process); interrupted: started, never ended. Each interrupted
  execution, and each job completed twice, is attributed to the fault that killed its process
  (kill -9 of its worker or of its own process, SIGTERM of its worker past the grace);
  anything else is `unattributed`, which must stay 0;
- attempts above max_attempts (must be 0);
- recovery per fault kind: until every worker LISTENs again, and for the faults that stop
  jobs, from the fault until each job it interrupted started again (after a kill -9 the
  rescue waits for the lease; after a job's process is killed, for the retry's backoff);
- the hot table (jobs_active) at the end.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

LABELS = {
    "kill9": "kill -9 a worker",
    "sigterm": "SIGTERM a worker",
    "pg_restart_fast": "restart Postgres (fast)",
    "pg_restart_immediate": "restart Postgres (immediate)",
    "terminate_backends": "pg_terminate_backend",
    "kill_child": "kill -9 a job's process",
}
EVENTS = (
    "job_rescued",
    "job_handed_back",
    "lease_lost",
    "write_refused",
    "listen_connection_dead",
    "db_connection_lost",
)


@dataclass
class Fault:
    kind: str
    #: Unix time of the injection (the effects' clock_timestamp is on the same machine).
    at: float
    #: The pid hit: a worker (kill9, sigterm) or a job's process (kill_child).
    target: int | None = None
    #: The jobs the target was running then.
    jobs: list[int] = field(default_factory=list)
    detail: str = ""
    #: Seconds until every worker LISTENed again.
    recovered_s: float | None = None

    def describe(self) -> str:
        held = f", {len(self.jobs)} job(s) running" if self.jobs else ""
        target = f" pid {self.target}" if self.target else ""
        return f"{LABELS[self.kind]}{target} {self.detail}{held}".rstrip()


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def _cause(
    faults: list[Fault], job_id: int, since: float, pid: int, worker_pid: int
) -> Fault | None:
    """The first fault that killed the process `pid` running `job_id`, or its worker, after
    `since` or while the job was running there (listed in the fault's jobs: its start may
    have been recorded a moment after the fault, on a loaded machine)."""
    for fault in sorted(faults, key=lambda f: f.at):
        during = job_id in fault.jobs or fault.at >= since - 0.05
        if fault.kind in ("kill9", "sigterm") and fault.target == worker_pid and during:
            return fault
        if fault.kind == "kill_child" and fault.target == pid:
            return fault
    return None


def account(url: str, feeder: Any, faults: list[Fault], *, lease_s: float) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        jobs = conn.execute(
            "SELECT id, (args->>'n')::int, status::text, attempts, max_attempts, last_error"
            " FROM pgdyno.jobs WHERE queue = 'chaos'"
        ).fetchall()
        effects = conn.execute(
            "SELECT job_id, attempt, pid, worker_pid, kind, extract(epoch FROM at)::float8"
            " FROM chaos_effects ORDER BY at"
        ).fetchall()
        hot_bytes, hot_rows = conn.execute(
            "SELECT pg_total_relation_size('pgdyno.jobs_active'), count(*) FROM pgdyno.jobs_active"
        ).fetchone() or (0, 0)
    present = {n for _, n, *_ in jobs}
    by_job = {job_id: (status, attempts, top) for job_id, _, status, attempts, top, _ in jobs}
    executions: dict[tuple[int, int, int], dict[str, Any]] = {}
    starts: dict[int, list[float]] = defaultdict(list)
    for job_id, attempt, pid, worker_pid, kind, at in effects:
        execution = executions.setdefault(
            (job_id, attempt, pid), {"worker_pid": worker_pid, "start": None, "end": None}
        )
        if kind == "start":
            execution["start"] = at
            starts[job_id].append(at)
        else:
            execution["end"], execution["ended_at"] = kind, at
    interrupted: Counter[str] = Counter()
    unattributed: list[dict[str, Any]] = []
    restarts: dict[str, list[float]] = defaultdict(list)  # fault kind -> job restart delays
    completions: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    for (job_id, attempt, pid), execution in executions.items():
        if execution["end"] == "done":
            completions[job_id].append((execution["ended_at"], pid, execution["worker_pid"]))
        if execution["end"] is not None or execution["start"] is None:
            continue
        cause = _cause(faults, job_id, execution["start"], pid, execution["worker_pid"])
        interrupted[cause.kind if cause else "unattributed"] += 1
        if cause is None:
            unattributed.append({"job": job_id, "attempt": attempt, "pid": pid})
            continue
        later = [at for at in starts[job_id] if at > cause.at]
        if later:
            restarts[cause.kind].append(min(later) - cause.at)
    twice: Counter[str] = Counter()
    for job_id, done in completions.items():
        for ended_at, pid, worker_pid in sorted(done)[:-1]:
            cause = _cause(faults, job_id, ended_at, pid, worker_pid)
            twice[cause.kind if cause else "unattributed"] += 1
            if cause is None:
                unattributed.append({"job": job_id, "completed_twice": True, "pid": pid})
    recovery: dict[str, Any] = {}
    for kind in LABELS:
        of_kind = [f for f in faults if f.kind == kind]
        if of_kind:
            recovery[kind] = {
                "count": len(of_kind),
                "workers_back_s": _stats(
                    [f.recovered_s for f in of_kind if f.recovered_s is not None]
                ),
                "jobs_running_again_s": _stats(restarts[kind]),
            }
    failed = Counter(
        (error or "").split(":", 1)[0] for _, _, status, _, _, error in jobs if status == "failed"
    )
    return {
        "enqueued": len(feeder.acknowledged),
        "single_inserts": feeder.singles,
        "bulk_enqueues": feeder.bulks,
        "in_doubt": len(feeder.in_doubt),
        "in_doubt_present": len(feeder.in_doubt & present),
        "lost": len(feeder.acknowledged - present)
        + sum(
            1
            for job_id, (status, _, _) in by_job.items()
            if status == "done" and not completions.get(job_id)
        ),
        "stranded": sum(1 for status, _, _ in by_job.values() if status in ("ready", "running")),
        "statuses": dict(Counter(status for status, _, _ in by_job.values())),
        "failed_by_error": dict(failed),
        "executions": len(executions),
        "interrupted": dict(interrupted),
        "completed_twice": dict(twice),
        "unattributed": unattributed,
        "attempts_over_max": sum(1 for _, attempts, top in by_job.values() if attempts > top)
        + sum(
            1 for job_id, attempt, _ in executions if attempt > by_job.get(job_id, (0, 0, 999))[2]
        ),
        "faults": dict(Counter(f.kind for f in faults)),
        "fault_log": [asdict(f) for f in faults],
        "recovery": recovery,
        "lease_s": lease_s,
        "hot_table_bytes": int(hot_bytes),
        "hot_table_rows": int(hot_rows),
    }


def count_events(logs: Path) -> dict[str, int]:
    """How often the workers logged each of EVENTS (all their logs in `logs`)."""
    counts: Counter[str] = Counter()
    for log in logs.glob("worker-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            for event in EVENTS:
                if f" event={event} " in f"{line} ":
                    counts[event] += 1
    return {event: counts[event] for event in EVENTS}


def healthy(result: dict[str, Any]) -> bool:
    """0 lost, 0 stranded, nothing unattributed, no attempt above its budget."""
    return not (
        result["lost"]
        or result["stranded"]
        or result["unattributed"]
        or result["attempts_over_max"]
    )


def _span(stats: dict[str, float] | None) -> str:
    return "-" if stats is None else f"{stats['median']:.1f} / {stats['max']:.1f} s"


def table(result: dict[str, Any]) -> str:
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(result["statuses"].items()))
    failed = ", ".join(f"{k} {v}" for k, v in sorted(result["failed_by_error"].items())) or "-"
    lines = [
        f"chaos soak: {result['duration_s']:.0f} s of faults, workers "
        f"{'/'.join(result['workers'])} (concurrency 4, lease {result['lease_s']:g} s), "
        f"seed {result['seed']}, drained in {result['drain_s']} s",
        "",
        f"{'jobs enqueued':<34}{result['enqueued']:>6}  ({result['single_inserts']} psql "
        f"INSERTs, {result['bulk_enqueues']} bulk enqueues; {result['in_doubt']} in doubt, "
        f"{result['in_doubt_present']} of them present)",
        f"{'jobs lost':<34}{result['lost']:>6}",
        f"{'jobs stranded ready/running':<34}{result['stranded']:>6}",
        f"{'final statuses':<34}{'':>6}  {statuses} (failed: {failed})",
        f"{'executions':<34}{result['executions']:>6}",
        f"{'interrupted executions':<34}{sum(result['interrupted'].values()):>6}  "
        + ", ".join(f"{k} {v}" for k, v in sorted(result["interrupted"].items())),
        f"{'jobs completed twice':<34}{sum(result['completed_twice'].values()):>6}  "
        + ", ".join(f"{k} {v}" for k, v in sorted(result["completed_twice"].items())),
        f"{'unattributed':<34}{len(result['unattributed']):>6}",
        f"{'attempts above max_attempts':<34}{result['attempts_over_max']:>6}",
        f"{'hot table at the end':<34}{result['hot_table_bytes'] // 1024:>6}  kB "
        f"({result['hot_table_rows']} rows)",
        "",
        f"{'fault':<30}{'count':>6}  {'workers back (median / max)':<30}"
        f"{'stopped jobs running again':<28}",
    ]
    for kind, figures in result["recovery"].items():
        lines.append(
            f"{LABELS[kind]:<30}{figures['count']:>6}  {_span(figures['workers_back_s']):<30}"
            f"{_span(figures['jobs_running_again_s']):<28}"
        )
    events = ", ".join(f"{k} {v}" for k, v in result["events"].items())
    lines += [
        "",
        f"worker log events: {events}; worker processes started {result['worker_starts']}",
    ]
    return "\n".join(lines)
