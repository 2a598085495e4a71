"""W3 wake-up latency and W4 steady state: commit on the client → handler start in the worker.

Both clocks are time.time() on this machine: the client records it right after its enqueue
transaction commits, the handler first thing when it starts (bench/stamp.py). One worker
process per system, started before the jobs (idle, listening) with the same flags as for the
drain; a few probe jobs make sure it is up before anything is timed.

W4 sends batches every 10 ms (one transaction each, through the system's bulk API: single-row
transactions cannot reach these rates with fsync on) for 60 s at a fixed rate, the same for
every system: half of pgdyno's measured 1-worker drain rate. A system that cannot keep up is
reported as saturated; its p99 then only counts the jobs it got to, a lower bound, and its
table size includes the backlog. pgdyno's workers vacuum the hot table themselves (see
pgdyno/maintenance.py); the peers rely on autovacuum.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from bench import stamp
from bench.registry import Figure, benchmark
from bench.runner import Context, Worker, launch, percentile, wait_for
from bench.systems.pgdyno import Pgdyno
from bench.workloads import MeasurementFailed, drain_queue

TICK_S = 0.010
#: After the load, how long a system may take to catch up before its backlog is reported.
CATCH_UP_S = 20.0


def start_listening_worker(
    ctx: Context, system: Any, url: str, label: str
) -> tuple[Worker, Any, Path]:
    """A continuous worker, proven up by probe jobs (negative keys), and a producer."""
    stamps = ctx.workdir / f"{label}.stamps"
    worker = launch(ctx, system.worker(url, drain=False), url, label, stamp_file=stamps)
    producer = system.producer(url)
    deadline = time.monotonic() + 60
    key = 0
    while time.monotonic() < deadline:
        key -= 1
        producer.stamped([key])
        if wait_for(lambda k=key: k in stamp.read(str(stamps)), timeout=0.5, interval=0.01):
            for _ in range(20):  # a few more, spaced like the real ones (warm-up)
                key -= 1
                producer.stamped([key])
                time.sleep(ctx.options.latency_spacing_s)
            wait_for(lambda k=key: k in stamp.read(str(stamps)), timeout=5)
            return worker, producer, stamps
        if worker.process.poll() is not None:
            break
    producer.close()
    worker.stop()
    raise MeasurementFailed(f"{system.name} worker never ran a probe job: {worker.tail()}")


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    return {f"p{q}": percentile(latencies_ms, q) for q in (50, 95, 99)} | {
        "max": max(latencies_ms) if latencies_ms else None,
        "count": len(latencies_ms),
    }


def measure_wakeup(ctx: Context, system: Any) -> dict[str, Any]:
    count, spacing = ctx.options.latency_jobs, ctx.options.latency_spacing_s
    with ctx.database(system) as url:
        worker, producer, stamps = start_listening_worker(ctx, system, url, f"{system.name}-w3")
        try:
            time.sleep(0.5)  # idle: nothing in flight when the first timed job arrives
            commits: dict[int, float] = {}
            begin = time.monotonic()
            for key in range(count):
                time.sleep(max(0.0, begin + key * spacing - time.monotonic()))
                commits[key] = producer.stamped([key])
            wait_for(lambda: all(k in stamp.read(str(stamps)) for k in (count - 1,)), timeout=10)
            time.sleep(0.2)
        finally:
            producer.close()
            worker.stop()
    starts = stamp.read(str(stamps))
    latencies = [(starts[k] - commits[k]) * 1000 for k in range(count) if k in starts]
    if len(latencies) < count:
        raise MeasurementFailed(f"{system.name}: {count - len(latencies)} jobs never started")
    return latency_summary(latencies)


@benchmark("latency", "W3: wake-up latency of an idle worker, 200 jobs spaced 20 ms", order=30)
def wakeup(ctx: Context) -> list[Figure]:
    rows = {
        q: Figure(f"wakeup_p{q}", f"W3 wake-up latency p{q}", "ms", "lower") for q in (50, 95, 99)
    }
    rows[99].target = "< PgQueuer's and < 3 ms"
    rows[99].goals = [("x_pgqueuer", 1.0), ("max", 3.0)]
    for system in ctx.of_role("subject", "peer"):
        try:
            summary = measure_wakeup(ctx, system)
        except Exception as exc:
            rows[99].notes[system.name] = f"failed: {str(exc)[:200]}"
            ctx.say(f"  {system.name} wake-up: FAILED {exc}")
            continue
        for q, row in rows.items():
            row.values[system.name] = summary[f"p{q}"]
        rows[99].detail[system.name] = summary
        ctx.say(
            f"  {system.name} wake-up: p50 {summary['p50']:.2f} ms, "
            f"p99 {summary['p99']:.2f} ms, max {summary['max']:.2f} ms"
        )
    return list(rows.values())


class TableSampler(threading.Thread):
    """Samples the hot table's size and dead tuples once a second while the load runs."""

    QUERY = (
        "SELECT pg_total_relation_size(c.oid), coalesce(s.n_live_tup, 0),"
        "       coalesce(s.n_dead_tup, 0), coalesce(s.autovacuum_count, 0)"
        "  FROM pg_class AS c LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid"
        " WHERE c.oid = %s::regclass"
    )

    def __init__(self, url: str, table: str) -> None:
        super().__init__(daemon=True)
        self.url, self.table = url, table
        self.samples: list[tuple[float, int, int, int, int]] = []
        self.halt = threading.Event()

    def sample(self, conn: psycopg.Connection) -> tuple[float, int, int, int, int]:
        size, live, dead, vacuums = conn.execute(self.QUERY, (self.table,)).fetchone()  # type: ignore[misc]
        return (time.time(), int(size), int(live), int(dead), int(vacuums))

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.halt.wait(1.0):
                self.samples.append(self.sample(conn))

    def final(self) -> dict[str, Any]:
        self.halt.set()
        self.join()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            _, size, live, dead, vacuums = self.sample(conn)
        peak = max((s[1] for s in self.samples), default=size)
        return {
            "size_mb": size / 2**20,
            "peak_size_mb": peak / 2**20,
            "live_tuples": live,
            "dead_tuples": dead,
            "autovacuum_runs": vacuums,
        }


def steady_rate(ctx: Context) -> float:
    """The W4 arrival rate: given, or half of pgdyno's 1-worker drain rate (measured if needed)."""
    if ctx.options.steady_rate:
        return ctx.options.steady_rate
    if "pgdyno.drain_rate_1w" not in ctx.shared:
        subjects = ctx.of_role("subject")
        subject = subjects[0] if subjects else Pgdyno(ctx.options.pgdyno_concurrency)
        ctx.shared["pgdyno.drain_rate_1w"] = drain_queue(ctx, subject, 1)["jobs_per_s"]
    return ctx.shared["pgdyno.drain_rate_1w"] / 2


def measure_steady(ctx: Context, system: Any, rate: float) -> dict[str, Any]:
    batch = max(1, round(rate * TICK_S))
    ticks = int(ctx.options.steady_s / TICK_S)
    with ctx.database(system) as url:
        worker, producer, stamps = start_listening_worker(ctx, system, url, f"{system.name}-w4")
        sampler = TableSampler(url, system.hot_table())
        sampler.start()
        commits: list[float] = []
        lag = 0.0
        try:
            begin = time.monotonic()
            for tick in range(ticks):
                due = begin + tick * TICK_S
                time.sleep(max(0.0, due - time.monotonic()))
                lag = max(lag, time.monotonic() - due)
                commits.append(producer.stamped(range(tick * batch, (tick + 1) * batch)))
            sent_s = time.monotonic() - begin
            drained = wait_for(lambda: system.pending(url) == 0, timeout=CATCH_UP_S, interval=0.2)
            table = sampler.final()
            backlog = system.pending(url)
        finally:
            producer.close()
            worker.stop()
    starts = stamp.read(str(stamps))
    total = ticks * batch
    latencies = [(starts[k] - commits[k // batch]) * 1000 for k in range(total) if k in starts]
    # p99 per 5 s of arrivals, and the hot table every second: does latency follow the bloat?
    per_window: dict[int, list[float]] = {}
    for k in range(total):
        if k in starts:
            window = int((commits[k // batch] - commits[0]) // 5)
            per_window.setdefault(window, []).append((starts[k] - commits[k // batch]) * 1000)
    timeline = {
        "p99_ms_per_5s": [round(percentile(v, 99) or 0, 1) for _, v in sorted(per_window.items())],
        "table_mb_dead_per_s": [
            (round(t - commits[0], 1), round(size / 2**20, 1), dead)
            for t, size, _, dead, _ in sampler.samples
        ],
    }
    return {
        "rate_target": batch / TICK_S,
        "rate_sent": total / sent_s,
        "jobs": total,
        "producer_max_lag_ms": round(lag * 1000, 1),
        "drained": bool(drained),
        "backlog_at_end": backlog,
        "started_jobs": len(latencies),
        "latency_ms": latency_summary(latencies),
        "hot_table": system.hot_table(),
        **table,
        "worker_cpu_s": round(worker.cpu_s, 2),
        "timeline": timeline,
    }


@benchmark(
    "steady", "W4: 60 s at half of pgdyno's drain rate: p99 latency, hot-table bloat", order=40
)
def steady(ctx: Context) -> list[Figure]:
    rate = steady_rate(ctx)
    p99 = Figure(
        "steady_p99",
        f"W4 steady {rate:,.0f} jobs/s: latency p99",
        "ms",
        "lower",
        target="< 50 ms",
        goals=[("max", 50.0)],
    )
    size = Figure(
        "steady_table_mb",
        "W4 steady: hot table size at end",
        "MB",
        "lower",
        target="< 10 MB",
        goals=[("max", 10.0)],
    )
    dead = Figure("steady_dead_tuples", "W4 steady: hot table dead tuples at end", "rows", "lower")
    for system in ctx.of_role("subject", "peer"):
        try:
            result = measure_steady(ctx, system, rate)
        except Exception as exc:
            p99.notes[system.name] = f"failed: {str(exc)[:200]}"
            ctx.say(f"  {system.name} steady: FAILED {exc}")
            continue
        p99.values[system.name] = result["latency_ms"]["p99"]
        size.values[system.name] = result["size_mb"]
        dead.values[system.name] = result["dead_tuples"]
        p99.detail[system.name] = result
        if not result["drained"] or result["rate_sent"] < 0.95 * result["rate_target"]:
            p99.notes[system.name] = (
                f"saturated: {result['backlog_at_end']:,} jobs left {CATCH_UP_S:.0f} s after "
                "the load; p99 of the jobs run (lower bound); table size includes the backlog"
            )
        ctx.say(
            f"  {system.name} steady: p99 {result['latency_ms']['p99'] or 0:.1f} ms, "
            f"sent {result['rate_sent']:,.0f}/s, {system.hot_table()} "
            f"{result['size_mb']:.1f} MB (peak {result['peak_size_mb']:.1f}), "
            f"{result['dead_tuples']:,} dead, backlog {result['backlog_at_end']:,}"
        )
    return [p99, size, dead]
