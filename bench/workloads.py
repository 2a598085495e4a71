"""W1 drain and W2 enqueue, for every system alike.

W1 drain: pre-enqueue the jobs (ANALYZE, CHECKPOINT), start the clock, launch the worker
processes in their drain mode (pgdyno --burst, PgQueuer drain, Procrastinate --one-shot),
and stop the clock at the last completion the system recorded in the database. Worker
start-up (interpreter, imports, connections) is inside that time, for every system. The
steady rate, first to last completion, leaves start-up out. "Done" means the same for all:
the job's completion is committed (pgdyno: row in jobs_finished with status done;
PgQueuer: 'successful' in pgqueuer_log; Procrastinate: 'succeeded' event), checked for
every job before a figure counts.

W2 enqueue: on one open client connection, N single-row transactions (autocommit), then one
bulk call of N jobs through each system's bulk API; the clock covers the API calls only.
Every system is measured three times, the systems taking turns, and the median is reported
(a two-second measurement on a shared machine is mostly noise otherwise).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.registry import Figure, benchmark
from bench.runner import Context, ServerCpu, Worker, launch, reap_all
from bench.systems.base import analyze
from bench.systems.pgbench import Pgbench

WORKER_COUNTS = (1, 2)
ENQUEUE_ROUNDS = 3


class MeasurementFailed(RuntimeError):
    """A system did not finish a workload correctly; its figure is left out, with the reason."""


def _run_drain(ctx: Context, system: Any, url: str, workers: int, jobs: int) -> dict[str, Any]:
    """Drain `jobs` pre-enqueued jobs with `workers` processes; returns the measurements."""
    system.prefill(url, jobs)
    analyze(url)
    ctx.server.checkpoint()
    server_cpu = ServerCpu(ctx.server)
    started = time.time()
    procs: list[Worker] = [
        launch(ctx, system.worker(url, drain=True), url, f"{system.name}-drain{workers}")
        for _ in range(workers)
    ]
    reap_all(procs, ctx.options.timeout_s)
    exited = time.time()
    left = system.pending(url)
    done = system.completions(url, since=started)
    failed = [proc for proc in procs if proc.status != 0]
    if failed or left or done.count < jobs or done.last is None or done.first is None:
        raise MeasurementFailed(
            f"{system.name}: {done.count}/{jobs} done, {left} left, exit statuses "
            f"{[proc.status for proc in procs]}: {failed[0].tail() if failed else ''}"
        )
    wall = done.last - started
    return {
        "jobs": jobs,
        "workers": workers,
        "wall_s": round(wall, 3),
        "jobs_per_s": jobs / wall,
        "steady_jobs_per_s": jobs / max(done.last - done.first, 1e-6),
        "first_completion_s": round(done.first - started, 3),
        "last_exit_s": round(exited - started, 3),
        "worker_cpu_s": round(sum(proc.cpu_s for proc in procs), 3),
        "server_cpu_s": round(server_cpu.used(), 3),
        "worker_max_rss_mb": round(max(proc.max_rss_mb for proc in procs), 1),
        "worker_context_switches": sum(proc.context_switches for proc in procs),
    }


def drain_queue(ctx: Context, system: Any, workers: int) -> dict[str, Any]:
    with ctx.database(system) as url:
        _run_drain(ctx, system, url, workers, ctx.options.warmup_jobs)  # warm-up
        return _run_drain(ctx, system, url, workers, ctx.options.drain_jobs)


def drain_pgbench(ctx: Context, limit: Pgbench, workers: int) -> dict[str, Any]:
    jobs = ctx.options.drain_jobs
    with ctx.database(limit) as url:
        warmup = ctx.options.warmup_jobs // (limit.batch * workers) * limit.batch * workers
        limit.prefill(url, warmup)
        limit.run(url, "drain", warmup, workers)
        limit.prefill(url, jobs)
        analyze(url)
        ctx.server.checkpoint()
        server_cpu = ServerCpu(ctx.server)
        run = limit.run(url, "drain", jobs, workers)
        if limit.pending(url):
            raise MeasurementFailed(f"{limit.name}: {limit.pending(url)} jobs left")
        return {
            "jobs": jobs,
            "workers": workers,
            "wall_s": round(run.wall_s, 3),
            "jobs_per_s": jobs / run.wall_s,
            "steady_jobs_per_s": run.jobs_per_s,
            "server_cpu_s": round(server_cpu.used(), 3),
        }


@benchmark("drain", "W1: drain 20,000 pre-enqueued no-op jobs, 1 and 2 worker processes", order=10)
def drain(ctx: Context) -> list[Figure]:
    wall = {
        n: Figure(
            f"drain_{n}w",
            f"W1 drain, {n} worker{'s' * (n > 1)} (launch → last done)",
            "jobs/s",
            "higher",
            target="≥ 3x PgQueuer",
            goals=[("x_pgqueuer", 3.0)],
        )
        for n in WORKER_COUNTS
    }
    steady = {
        n: Figure(
            f"drain_steady_{n}w",
            f"W1 drain, {n} worker{'s' * (n > 1)} (first → last done)",
            "jobs/s",
            "higher",
        )
        for n in WORKER_COUNTS
    }
    for system in ctx.systems:
        for workers in WORKER_COUNTS:
            try:
                if system.role == "limit":
                    result = drain_pgbench(ctx, system, workers)
                else:
                    result = drain_queue(ctx, system, workers)
            except Exception as exc:  # one system failing must not lose the others' figures
                wall[workers].values[system.name] = None
                wall[workers].notes[system.name] = f"failed: {str(exc)[:200]}"
                ctx.say(f"  {system.name} drain x{workers}: FAILED {exc}")
                continue
            wall[workers].values[system.name] = result["jobs_per_s"]
            steady[workers].values[system.name] = result["steady_jobs_per_s"]
            wall[workers].detail[system.name] = result
            if system.name == "pgdyno" and workers == 1:
                ctx.shared["pgdyno.drain_rate_1w"] = result["jobs_per_s"]
            ctx.say(
                f"  {system.name} drain x{workers}: {result['jobs_per_s']:,.0f} jobs/s "
                f"({result['wall_s']} s; steady {result['steady_jobs_per_s']:,.0f}/s)"
            )
    return [*wall.values(), *steady.values()]


def _enqueue_queue(ctx: Context, system: Any) -> tuple[float, float]:
    """(single-row jobs/s, bulk jobs/s) through the system's own client API."""
    single, bulk = ctx.options.single_jobs, ctx.options.bulk_jobs
    with ctx.database(system) as url:
        producer = system.producer(url)
        try:
            producer.single(200)  # warm-up: connection caches, prepared statements
            ctx.server.checkpoint()
            single_s = producer.single(single)
            producer.bulk(1_000)
            ctx.server.checkpoint()
            bulk_s = producer.bulk(bulk)
        finally:
            producer.close()
        enqueued = system.pending(url)
    if enqueued != single + bulk + 1_200:
        raise MeasurementFailed(f"{system.name}: {enqueued} jobs enqueued, expected more")
    return single / single_s, bulk / bulk_s


def _enqueue_pgbench(ctx: Context, limit: Pgbench) -> tuple[float | None, float | None]:
    with ctx.database(limit) as url:
        if limit.batch == 1:
            limit.run(url, "enqueue", 200)
            ctx.server.checkpoint()
            return limit.run(url, "enqueue", ctx.options.single_jobs).jobs_per_s, None
        limit.run(url, "enqueue", 1_000)
        ctx.server.checkpoint()
        return None, limit.run(url, "enqueue", ctx.options.bulk_jobs).jobs_per_s


@benchmark("enqueue", "W2: 5,000 single-row enqueue transactions; 20,000 jobs in bulk", order=20)
def enqueue(ctx: Context) -> list[Figure]:
    single = Figure(
        "enqueue_single",
        "W2 enqueue, one job per transaction",
        "jobs/s",
        "higher",
        target="≥ 1.3x PgQueuer",
        goals=[("x_pgqueuer", 1.3)],
    )
    bulk = Figure(
        "enqueue_bulk",
        "W2 enqueue, bulk (one call)",
        "jobs/s",
        "higher",
        target="≥ 2x PgQueuer",
        goals=[("x_pgqueuer", 2.0)],
    )
    samples: dict[str, tuple[list[float], list[float]]] = {}
    # A run of a few seconds is at the mercy of whatever else the machine does: measure every
    # system ENQUEUE_ROUNDS times, taking turns, and keep the median.
    for _ in range(ENQUEUE_ROUNDS):
        for system in ctx.systems:
            if system.name in single.notes:
                continue
            try:
                if system.role == "limit":
                    one, many = _enqueue_pgbench(ctx, system)
                else:
                    one, many = _enqueue_queue(ctx, system)
            except Exception as exc:
                single.notes[system.name] = f"failed: {str(exc)[:200]}"
                ctx.say(f"  {system.name} enqueue: FAILED {exc}")
                continue
            ones, manys = samples.setdefault(system.name, ([], []))
            if one is not None:
                ones.append(one)
            if many is not None:
                manys.append(many)
    for name, (ones, manys) in samples.items():
        if ones:
            single.values[name] = statistics.median(ones)
            single.detail[name] = {"rounds_jobs_per_s": [round(x) for x in ones]}
        if manys:
            bulk.values[name] = statistics.median(manys)
            bulk.detail[name] = {"rounds_jobs_per_s": [round(x) for x in manys]}
        ctx.say(
            f"  {name} enqueue (median of {ENQUEUE_ROUNDS}): single "
            f"{[round(x) for x in ones] or None}, bulk {[round(x) for x in manys] or None}"
        )
    return [single, bulk]
