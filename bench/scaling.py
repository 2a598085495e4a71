"""Scaling benchmark: how fast julia reacts, how fast winston leaves, how light julia is.

- Scale-up decision latency: from the enqueuing transaction's commit to the PATCH arriving at
  the formation API of the local platform (p50/p95/p99 over 100 enqueues, each from zero).
- Scale-down latency: from the last job's finish (linger=0) to the PATCH to zero.
- Dispatcher peak RSS and CPU seconds per idle minute.

Run: python -m bench.scaling [--enqueues 100] [--scale-downs 10] [--idle-seconds 30]
Prints a table and writes bench/results/scaling-<timestamp>.json.

`python -m bench.scaling cost [--boot 20] [--time-scale 1] [--max 2]`: what scaling costs,
a bursty trace replayed per policy on the local platform (bench/scaling_cost.py), written to
bench/results/scaling-cost-<timestamp>.json; `all` runs both.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import requests

from bench import scaling_cost
from pgdyno.migrate import migrate
from pgdyno.platform import LocalPlatform
from pgdyno.platform.postgres import EmbeddedPostgres

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"decision_p99_ms": 100.0, "scale_down_s": 1.0, "dispatcher_rss_mb": 60.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.002)


def start_platform(url: str, workdir: Path, winston: str) -> LocalPlatform:
    procfile = workdir / "Procfile"
    procfile.write_text(
        f"julia: {sys.executable} -m pgdyno dispatcher "
        f"--scale bench=winston,linger=0\nwinston: {winston}\n"
    )
    env = {**os.environ, "PGDYNO_IMPORT": "pgdyno.demo", "PGDYNO_LOG_LEVEL": "WARNING"}
    platform = LocalPlatform(procfile, url, output=io.StringIO(), env=env, kill_timeout=5)
    platform.start()
    return platform


def patches_to(platform: LocalPlatform, quantity: int) -> list[float]:
    return [
        arrived
        for arrived, method, _t, body, status in platform.server.requests
        if method == "PATCH" and status == 200 and (body or {}).get("quantity") == quantity
    ]


def decision_latency(url: str, workdir: Path, enqueues: int) -> list[float]:
    """winston is a placeholder process here, so jobs stay ready: each round resets the
    formation to zero (platform and recorded state), enqueues one job and times the PATCH."""
    platform = start_platform(url, workdir, "sleep 3600")
    latencies = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            wait(lambda: conn.execute("SELECT count(*) FROM pgdyno.scale_rules").fetchone()[0])
            session = requests.Session()
            session.headers.update(
                {
                    "Accept": "application/vnd.heroku+json; version=3",
                    "Authorization": f"Bearer {platform.token}",
                }
            )
            for _ in range(enqueues):
                conn.execute("DELETE FROM pgdyno.jobs")
                session.patch(
                    f"{platform.url}/apps/{platform.app}/formation/winston",
                    json={"quantity": 0},
                    timeout=5,
                )
                conn.execute("UPDATE pgdyno.formations SET quantity = 0")
                time.sleep(0.55)  # past the dispatcher's debounce period (0.5 s by default)
                before = len(patches_to(platform, 1))
                conn.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('bench', 'x')")
                committed = time.time()
                wait(lambda b=before: len(patches_to(platform, 1)) > b)
                latencies.append((patches_to(platform, 1)[-1] - committed) * 1000)
            conn.execute("DELETE FROM pgdyno.jobs")
    finally:
        platform.stop()
    return latencies


def scale_down_latency(url: str, workdir: Path, rounds: int) -> list[float]:
    """A real worker runs one job; time from its finish to the PATCH to zero (linger=0)."""
    winston = f"{sys.executable} -m pgdyno worker --queue bench"
    platform = start_platform(url, workdir, winston)
    latencies = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            wait(lambda: conn.execute("SELECT count(*) FROM pgdyno.scale_rules").fetchone()[0])
            for _ in range(rounds):
                before = len(patches_to(platform, 0))
                job = conn.execute(
                    "INSERT INTO pgdyno.jobs (queue, task, args) VALUES "
                    "('bench', 'demo.greet', '{\"name\": \"b\", \"pause\": 0}')"
                    " RETURNING id"
                ).fetchone()[0]
                wait(lambda b=before: len(patches_to(platform, 0)) > b)
                finished = conn.execute(
                    "SELECT extract(epoch FROM finished_at) FROM pgdyno.jobs WHERE id = %s", (job,)
                ).fetchone()[0]
                latencies.append(patches_to(platform, 0)[-1] - float(finished))
                wait(lambda: not platform.dynos.alive("winston"))
    finally:
        platform.stop()
    return latencies


def dispatcher_footprint(url: str, workdir: Path, idle_seconds: float) -> dict[str, float]:
    platform = start_platform(url, workdir, "sleep 3600")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            wait(lambda: conn.execute("SELECT count(*) FROM pgdyno.scale_rules").fetchone()[0])
        pid = platform.dynos.pid("julia.1")
        assert pid is not None
        time.sleep(2)  # let start-up settle
        cpu_before = cpu_seconds(pid)
        time.sleep(idle_seconds)
        cpu = cpu_seconds(pid) - cpu_before
        status = proc_status(pid)
        return {
            "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
            "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
            "cpu_s_per_idle_minute": cpu * 60 / idle_seconds,
            "idle_window_s": idle_seconds,
        }
    finally:
        platform.stop()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=("latency", "cost", "all"), default="latency")
    parser.add_argument("--boot", type=float, default=20.0, help="simulated dyno boot, s")
    parser.add_argument("--time-scale", type=float, default=1.0, help="run N times faster")
    parser.add_argument("--max", type=int, default=2, help="most winston dynos")
    parser.add_argument("--enqueues", type=int, default=100)
    parser.add_argument("--scale-downs", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pgdyno-bench-scaling-"))
    server = EmbeddedPostgres(workdir / "pg", settings={"fsync": "on", "synchronous_commit": "on"})
    result: dict[str, Any] = {}
    try:
        url = server.start()
        if args.part in ("cost", "all"):
            result["cost"] = scaling_cost.run(
                url, workdir, boot=args.boot, time_scale=args.time_scale, max_dynos=args.max
            )
            scaling_cost.print_table(result["cost"])
            _write("scaling-cost", result["cost"])
        if args.part in ("latency", "all"):
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
            up = decision_latency(url, workdir, args.enqueues)
            down = scale_down_latency(url, workdir, args.scale_downs)
            footprint = dispatcher_footprint(url, workdir, args.idle_seconds)
            result.update(latency_result(up, down, footprint))
            print_table(result)
            _write("scaling", result)
    finally:
        server.destroy()
    return result


def latency_result(up: list[float], down: list[float], footprint: dict[str, float]) -> dict:
    return {
        "benchmark": "scaling",
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "decision_latency_ms": {
            "p50": percentile(up, 50),
            "p95": percentile(up, 95),
            "p99": percentile(up, 99),
            "max": max(up),
            "n": len(up),
        },
        "scale_down_latency_s": {
            "p50": percentile(down, 50),
            "max": max(down),
            "mean": statistics.mean(down),
            "n": len(down),
        },
        "dispatcher": footprint,
        "targets": TARGETS,
    }


def _write(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


def print_table(result: dict[str, Any]) -> None:
    up, down, disp = (
        result["decision_latency_ms"],
        result["scale_down_latency_s"],
        result["dispatcher"],
    )
    rows = [
        ("scale-up decision p50 (commit -> PATCH)", f"{up['p50']:.1f} ms", ""),
        ("scale-up decision p95", f"{up['p95']:.1f} ms", ""),
        ("scale-up decision p99", f"{up['p99']:.1f} ms", "< 100 ms"),
        ("scale-down after last job (linger 0), p50", f"{down['p50']:.3f} s", ""),
        ("scale-down after last job (linger 0), max", f"{down['max']:.3f} s", "< 1 s"),
        ("dispatcher peak RSS", f"{disp['peak_rss_mb']:.1f} MB", "< 60 MB"),
        ("dispatcher CPU per idle minute", f"{disp['cpu_s_per_idle_minute']:.3f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'scaling':<{width}}  {'measured':>12}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>12}  {target}")


if __name__ == "__main__":
    main()
