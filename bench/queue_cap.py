"""What 20,000 invented queue names cost pgdyno: `python -m bench.queue_cap`.

A throwaway embedded Postgres (fsync on) with a small real setup (winston scales queue
`reports`, a live worker serves `default` and `reports`, queue `mail` is paused, 50 jobs in
`default`, 2,000 finished jobs counted), then an enqueue role (`pgdyno grant-enqueue`) inserts
one job into each of QUEUES new queue names, as a hostile client could:

    INSERT INTO pgdyno.jobs (queue, task, run_at)
    SELECT 'spam-' || g, 'x', '2199-01-01' FROM generate_series(1, 20000) AS g

Measured: the rows the dispatcher's sampler writes on its first tick and on a heartbeat tick
(every group due) and the tick's time; each statement that lists queues, alone (p50 of ROUNDS,
rows fetched included; statements of older versions too, those missing are skipped); each
dashboard page and /metrics over HTTP (waitress on 127.0.0.1, ROUNDS fetches after a warm-up:
p50, p95, bytes; the overview also as its htmx refresh); `pgdyno queue list` and `pgdyno
status` in-process (click's CliRunner) and as a user runs them (a new process
each, wall time including Python's start-up, which `pgdyno --help` shows alone; p50 of
CLI_ROUNDS). Runs against whichever pgdyno is importable, so the same script measures an older
checkout (run it from a folder holding that checkout's pgdyno/ and bench/).

Prints a table; writes JSON to bench/results/queue-cap-<time>.json. About a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

RESULTS = Path(__file__).resolve().parent / "results"
QUEUES = 20_000
ROUNDS = 10
CLI_ROUNDS = 3


def fill_setup(conn: psycopg.Connection) -> None:
    """The installation being attacked: a rule, a paused queue, a live worker, some jobs."""
    conn.execute(
        "INSERT INTO pgdyno.scale_rules (queue, process_type) VALUES ('reports', 'winston')"
    )
    conn.execute("INSERT INTO pgdyno.formations (process_type, quantity) VALUES ('winston', 0)")
    conn.execute("INSERT INTO pgdyno.queues (name, paused, paused_at) VALUES ('mail', true, now())")
    conn.execute(
        "INSERT INTO pgdyno.workers (id, dyno, process_type, queues, concurrency, pid,"
        " heartbeat_at, busy_at, running) VALUES ('web.1:1:ab', 'web.1', 'web',"
        " ARRAY['default', 'reports'], 4, 1, now() + interval '1 day', now(), 0)"
    )
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task) SELECT 'default', 't' FROM generate_series(1, 50)"
    )
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, finished_at) SELECT 'default', 't',"
        " 'done', now() - interval '1 hour' FROM generate_series(1, 2000)"
    )


def spam(url: str, owner: psycopg.Connection, queues: int) -> float:
    """Insert one job into each of `queues` new queues as an enqueue role; seconds taken."""
    from pgdyno import roles

    name = f"bench_enqueue_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    owner.execute(
        pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(pgsql.Identifier(name), password)
    )
    roles.grant_enqueue(owner, name)
    started = time.perf_counter()
    with psycopg.connect(make_conninfo(url, user=name, password=password)) as client:
        client.execute(
            "INSERT INTO pgdyno.jobs (queue, task, run_at) SELECT 'spam-' || g, 'x',"
            " '2199-01-01' FROM generate_series(1, %s) AS g",
            (queues,),
        )
    took = time.perf_counter() - started
    owner.execute("ANALYZE pgdyno.jobs_active")
    return took


def sample(conn: psycopg.Connection) -> dict[str, Any]:
    """Rows written by a first tick and by a heartbeat tick, and their times."""
    from pgdyno.web.sampler import HEARTBEAT_S, Sampler

    now = [1000.0]
    sampler = Sampler(clock=lambda: now[0])
    times, rows = [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        rows.append(sampler.tick(conn))
        times.append((time.perf_counter() - started) * 1000)
        now[0] += HEARTBEAT_S  # every group due again: the most a tick writes
    total = conn.execute("SELECT count(*) FROM pgdyno.metrics_samples").fetchone()
    return {
        "rows_first_tick": rows[0],
        "rows_heartbeat_tick": rows[1],
        "tick_p50_ms": round(statistics.median(times), 1),
        "metrics_samples_rows": total[0] if total else None,
    }


def statements(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """p50 of each queue-listing statement this pgdyno has (older ones: missing are skipped)."""
    from pgdyno import sql

    known = ["default", "mail", "reports"]
    candidates: list[tuple[str, dict[str, Any]]] = [
        ("web_queues_that_matter", {"expiry": 30.0}),
        ("web_queue_summary", {"known": known, "others": 20}),
        ("web_queue_status", {"known": known, "others": 20}),
        ("metrics_counters_advance", {"settle": timedelta(0), "known": known, "most": 1000}),
        # before the queue cap
        ("metrics_current", {}),
        ("web_queue_overview", {}),
        ("queues_overview", {}),
        ("queue_status", {}),
    ]
    rows = []
    for name, params in candidates:
        try:
            statement = sql.query(name)
        except Exception:
            continue
        times = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            fetched = conn.execute(statement, params).fetchall()
            times.append((time.perf_counter() - started) * 1000)
        rows.append(
            {"statement": name, "p50_ms": round(statistics.median(times), 1), "rows": len(fetched)}
        )
    return rows


def pages(url: str) -> list[dict[str, Any]]:
    import requests

    rows = []
    with requests.Session() as session:
        for path, headers in (
            ("", {}),
            ("", {"HX-Request": "true"}),
            ("types", {}),
            ("jobs", {}),
            ("timeline.json", {}),
            ("metrics", {}),
        ):
            assert session.get(url + path, headers=headers, timeout=60).status_code == 200, path
            times = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                answer = session.get(url + path, headers=headers, timeout=60)
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200
            times.sort()
            rows.append(
                {
                    "path": "/" + path + (" (htmx refresh)" if headers else ""),
                    "p50_ms": round(statistics.median(times), 1),
                    "p95_ms": round(times[max(int(len(times) * 0.95) - 1, 0)], 1),
                    "bytes": len(answer.content),
                }
            )
    return rows


def commands(url: str) -> list[dict[str, Any]]:
    from click.testing import CliRunner

    from pgdyno.cli import main

    rows = []
    env = {**os.environ, "DATABASE_URL": url, "PGDYNO_LOG_LEVEL": "WARNING"}
    for args in (["--help"], ["queue", "list"], ["status"], ["status", "--json"]):
        in_process = []
        for _ in range(CLI_ROUNDS if args != ["--help"] else 0):
            started = time.perf_counter()
            result = CliRunner().invoke(main, args, env={"DATABASE_URL": url})
            in_process.append((time.perf_counter() - started) * 1000)
            assert result.exit_code == 0, result.output
        times, output = [], b""
        for _ in range(CLI_ROUNDS):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "pgdyno", *args], env=env, capture_output=True, check=True
            )
            times.append((time.perf_counter() - started) * 1000)
            output = done.stdout
        rows.append(
            {
                "command": "pgdyno " + " ".join(args),
                "in_process_p50_ms": round(statistics.median(in_process), 1)
                if in_process
                else None,
                "process_p50_ms": round(statistics.median(times), 1),
                "lines": output.count(b"\n"),
                "bytes": len(output),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=QUEUES, help="invented queue names")
    args = parser.parse_args(argv)

    from pgdyno.migrate import migrate
    from pgdyno.platform.postgres import EmbeddedPostgres
    from pgdyno.web.app import create_app
    from pgdyno.web.server import start_background

    with tempfile.TemporaryDirectory(prefix="pgdyno-bench-queue-cap-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        url = server.start()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
                fill_setup(conn)
                conn.execute(  # the finished jobs of fill_setup get counted
                    "UPDATE pgdyno.metrics_state SET counted_until = now() - interval '2 hours'"
                )
                took = spam(url, conn, args.queues)
                print(f"{args.queues:,} queues inserted by the enqueue role in {took:.2f} s")
                ticks = sample(conn)
                statement_rows = statements(conn)
            dashboard = start_background(create_app(url, reports_dir=tmp))
            try:
                page_rows = pages(dashboard.url)
            finally:
                dashboard.stop()
            command_rows = commands(url)
        finally:
            server.destroy()

    print(
        f"\nsampler: {ticks['rows_first_tick']} rows on the first tick,"
        f" {ticks['rows_heartbeat_tick']} on a heartbeat tick, p50 {ticks['tick_p50_ms']} ms;"
        f" metrics_samples holds {ticks['metrics_samples_rows']:,} rows after {ROUNDS} ticks"
    )
    print(f"\n{'statement':<28} {'p50 ms':>8} {'rows':>8}")
    for row in statement_rows:
        print(f"{row['statement']:<28} {row['p50_ms']:>8} {row['rows']:>8}")
    print(f"\n{'page':<28} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>11}")
    for row in page_rows:
        print(f"{row['path']:<28} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['bytes']:>11,}")
    print(f"\n{'command':<28} {'in-process ms':>14} {'process ms':>11} {'lines':>8} {'bytes':>11}")
    for row in command_rows:
        print(
            f"{row['command']:<28} {row['in_process_p50_ms'] or '-':>14}"
            f" {row['process_p50_ms']:>11} {row['lines']:>8} {row['bytes']:>11,}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"queue-cap-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps(
            {
                "queues": args.queues,
                "rounds": ROUNDS,
                "sampler": ticks,
                "statements": statement_rows,
                "pages": page_rows,
                "commands": command_rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
