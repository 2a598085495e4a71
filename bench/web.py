"""Dashboard page render times over a large history: `python -m bench.web`.

A throwaway embedded Postgres (fsync on) holding a million finished jobs over a week (mostly
done, 1 in 500 failed, 1 in 2,000 cancelled, 1 in 7 in a second queue, 1 in 1,000 a report),
50 ready jobs, a week of timeline samples every 5 s for one process type and 2,000 scale
events, 20 registered workers running 30 jobs, a paused queue and 20 schedules. The dashboard
is served by waitress on 127.0.0.1 exactly as `pgdyno web` serves it; each page is fetched
over HTTP, first once to warm up, then ROUNDS times, and the wall time of each request is kept
(server render + loopback HTTP). Also times one sampler tick (what the
dispatcher adds to each reconcile).

Target: every page under 200 ms. Prints a table; writes JSON to bench/results/web-<time>.json.
About a minute.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

RESULTS = Path(__file__).resolve().parent / "results"
FINISHED_JOBS = 1_000_000
ROUNDS = 30
TARGET_MS = 200.0


def fill_history(conn: psycopg.Connection, count: int = FINISHED_JOBS) -> None:
    """`count` finished jobs spread over the last week, and 50 ready ones (see the module)."""
    conn.execute(
        """
        INSERT INTO pgdyno.jobs (queue, task, status, attempts, created_at, started_at,
                                 finished_at, last_error)
        SELECT CASE WHEN n %% 7 = 0 THEN 'mail' ELSE 'default' END,
               CASE WHEN n %% 1000 = 7 THEN 'report' ELSE 'send_invoice' END,
               (CASE WHEN n %% 500 = 3 THEN 'failed' WHEN n %% 2000 = 5 THEN 'cancelled'
                     ELSE 'done' END)::pgdyno.job_status,
               1, t, t, t + interval '20 ms',
               CASE WHEN n %% 500 = 3 THEN 'ValueError: boom' END
          FROM generate_series(1, %(count)s) AS n,
               LATERAL (SELECT now() - interval '7 days' * (1 - n::float8 / %(count)s)) AS s (t)
        """,
        {"count": count},
    )
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task) SELECT 'default', 'send_invoice'"
        " FROM generate_series(1, 50)"
    )
    conn.execute("VACUUM ANALYZE pgdyno.jobs_finished")
    conn.execute("ANALYZE pgdyno.jobs_active")


def fill_timeline(conn: psycopg.Connection) -> None:
    """A week of samples every 5 s for winston's queue (busy: every tick differs), their
    per-minute rollup, and 2,000 scale events."""
    conn.execute(
        "INSERT INTO pgdyno.scale_rules (queue, process_type, max_quantity)"
        " VALUES ('default', 'winston', 4)"
    )
    conn.execute("INSERT INTO pgdyno.formations (process_type, quantity) VALUES ('winston', 1)")
    conn.execute(
        """
        INSERT INTO pgdyno.metrics_samples
               (at, queue, process_type, quantity, ready, running, finished_total)
        SELECT now() - interval '5 s' * i, 'default', 'winston', (i / 700) % 5,
               (i * 37) % 120, (i / 700) % 5, 1000000 - i
          FROM generate_series(0, 7 * 86400 / 5) AS i
        """
    )
    conn.execute(
        """
        INSERT INTO pgdyno.metrics_minutes (process_type, minute, quantity, depth)
        SELECT 'winston', date_trunc('minute', at), max(quantity), max(ready + running)
          FROM pgdyno.metrics_samples
         GROUP BY 2
        """
    )
    conn.execute(
        """
        INSERT INTO pgdyno.scale_events (at, process_type, from_quantity, to_quantity, reason,
                                         actor, outcome, request_id, duration_ms)
        SELECT now() - interval '5 minutes' * i, 'winston', i % 4, (i + 1) % 4,
               'jobs enqueued: 3 ready, 1 running', 'dispatcher julia.1', 'ok',
               md5(i::text), 120
          FROM generate_series(0, 1999) AS i
        """
    )
    conn.execute("ANALYZE pgdyno.metrics_samples")
    conn.execute("ANALYZE pgdyno.metrics_minutes")
    conn.execute("ANALYZE pgdyno.scale_events")


def fill_features(conn: psycopg.Connection) -> None:
    """What the Process types, Overview and Schedules pages show besides jobs: 20 registered
    winston workers (2 lost, 3 stopped), each running 2 jobs, a paused queue, 20 schedules."""
    conn.execute(
        """
        INSERT INTO pgdyno.workers (id, dyno, process_type, queues, concurrency, pid,
                                    heartbeat_at, busy_at, running, stopped_at)
        SELECT 'winston.' || n || ':100:ab', 'winston.' || n, 'winston', ARRAY['default'], 4, 100,
               now() - CASE WHEN n <= 2 THEN interval '5 min' ELSE interval '1 s' END, now(),
               2, CASE WHEN n BETWEEN 3 AND 5 THEN now() END
          FROM generate_series(1, 20) AS n
        """
    )
    conn.execute(
        """
        INSERT INTO pgdyno.jobs (queue, task, status, attempts, started_at, lease_expires_at,
                                 worker)
        SELECT 'default', 'send_invoice', 'running', 1, now(), now() + interval '1 hour',
               'winston.' || (6 + n % 15) || ':100:ab'
          FROM generate_series(1, 30) AS n
        """
    )
    conn.execute("INSERT INTO pgdyno.queues (name, paused, paused_at) VALUES ('mail', true, now())")
    conn.execute(
        """
        INSERT INTO pgdyno.schedules (name, task, queue, cron, every, next_run_at, last_run_at)
        SELECT 'schedule-' || n, 'report', 'default',
               CASE WHEN n % 2 = 0 THEN '0 3 * * *' END,
               CASE WHEN n % 2 = 1 THEN interval '15 minutes' END,
               now() + interval '1 hour', now() - interval '1 hour'
          FROM generate_series(1, 20) AS n
        """
    )
    conn.execute("ANALYZE pgdyno.jobs_active")


def measure(url: str, paths: list[str]) -> list[dict[str, Any]]:
    import requests

    rows = []
    with requests.Session() as session:
        for path in paths:
            assert session.get(url + path, timeout=30).status_code == 200, path
            times = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                answer = session.get(url + path, timeout=30)
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200
            times.sort()
            rows.append(
                {
                    "path": path,
                    "p50_ms": round(statistics.median(times), 1),
                    "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
                    "max_ms": round(times[-1], 1),
                    "bytes": len(answer.content),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=FINISHED_JOBS, help="finished jobs")
    args = parser.parse_args(argv)

    from pgdyno.migrate import migrate
    from pgdyno.platform.postgres import EmbeddedPostgres
    from pgdyno.web.app import create_app
    from pgdyno.web.sampler import Sampler
    from pgdyno.web.server import start_background

    with tempfile.TemporaryDirectory(prefix="pgdyno-bench-web-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        url = server.start()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
                started = time.perf_counter()
                fill_history(conn, args.jobs)
                fill_timeline(conn)
                fill_features(conn)
                took = time.perf_counter() - started
                print(f"history: {args.jobs:,} finished jobs in {took:.0f} s")
                report_job = conn.execute(
                    "SELECT max(id) FROM pgdyno.jobs WHERE task = 'report'"
                ).fetchone()[0]
                sampler = Sampler(min_interval=0)
                ticks = []
                for _ in range(20):
                    started = time.perf_counter()
                    sampler.tick(conn)
                    ticks.append((time.perf_counter() - started) * 1000)
            dashboard = start_background(create_app(url, reports_dir="reports"))
            try:
                paths = [
                    "",
                    "types",
                    "timeline",
                    "timeline.json?range=hour",
                    "timeline.json?range=day",
                    "timeline.json?range=week",
                    "jobs",
                    "jobs?status=failed",
                    "jobs?queue=mail",
                    "jobs?task=report",
                    "jobs?queue=mail&status=failed",
                    "jobs?before=500000",
                    f"jobs/{report_job}",
                    "schedules",
                    "reports",
                    "metrics",
                ]
                rows = measure(dashboard.url, paths)
            finally:
                dashboard.stop()
        finally:
            server.destroy()

    print(f"\n{'page':<34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'bytes':>9}")
    for row in rows:
        flag = "" if row["p95_ms"] < TARGET_MS else "  over target"
        print(
            f"/{row['path']:<33} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8}"
            f" {row['bytes']:>9,}{flag}"
        )
    tick = round(statistics.median(ticks), 2)
    print(f"\nsampler tick (the dispatcher's share per reconcile): median {tick} ms")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"web-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps(
            {
                "finished_jobs": args.jobs,
                "rounds": ROUNDS,
                "target_ms": TARGET_MS,
                "pages": rows,
                "sampler_tick_median_ms": tick,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0 if all(row["p95_ms"] < TARGET_MS for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
