"""What scaling costs: a bursty trace replayed on the local platform, per scaling policy.

Each policy runs the same trace of heavy jobs (sleeps of 8-60 s, in bursts) on its own local
platform and database, all four at once, with a simulated dyno boot (the dyno is billed from
its start, its command starts `boot` seconds later; Heroku workers take 20-60 s):

- pgdyno, defaults: the dispatcher spins winston up as jobs arrive, workers linger 30 s;
- pgdyno, linger 0: the same, scaling to zero the moment the type is drained;
- poll 60 s, down after 10 min: a hosted autoscaler's way (a poller reads the queue every
  60 s, scales up to what it needs, and to zero after 10 idle minutes);
- always on: winston at `max` dynos all along.

Per policy: dyno-seconds billed (each winston dyno from its start to its exit, within the
window), dyno-seconds busy (the jobs' run times), efficiency (busy / billed), boots, and the
jobs' wait (enqueue to start) p50/p99. `--time-scale S` runs everything S times faster (the
figures are given back in trace seconds); process start-up times do not scale, so keep S
small.

Run: python -m bench.scaling cost [--boot 20] [--time-scale 1] [--max 2]
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

from pgdyno.migrate import migrate
from pgdyno.platform import LocalPlatform
from pgdyno.scaling.formation.heroku import HerokuFormation

#: (arrival in trace seconds, jobs, seconds each): bursts of heavy jobs over ten minutes.
TRACE: list[tuple[float, int, float]] = [
    (10, 3, 25),
    (130, 1, 60),
    (290, 6, 8),
    (320, 2, 15),
    (470, 4, 20),
    (540, 1, 40),
]
WINDOW_S = 660.0  # the trace, and time for its last jobs to finish and dynos to go
POLICIES = ("pgdyno defaults", "pgdyno linger 0", "poll 60 s, down after 10 min", "always on")


@dataclass(frozen=True)
class Scale:
    """Trace seconds to real seconds: divided by `factor`."""

    factor: float

    def real(self, seconds: float) -> float:
        return seconds / self.factor

    def trace(self, seconds: float) -> float:
        return seconds * self.factor


def procfile(policy: str, scale: Scale, max_dynos: int) -> str:
    worker = f"{sys.executable} -m pgdyno worker --queue bench"
    if not policy.startswith("pgdyno"):
        return f"winston: {worker}\n"
    # The default linger (30 s), scaled like every other duration.
    linger = f",linger={scale.real(30):g}s" if policy == "pgdyno defaults" else ",linger=0"
    return (
        f"julia: {sys.executable} -m pgdyno dispatcher "
        f"--scale bench=winston,max={max_dynos}{linger}\n"
        f"winston: {worker}\n"
    )


def poller(
    platform: LocalPlatform, url: str, scale: Scale, max_dynos: int, stop: threading.Event
) -> None:
    """The hosted autoscaler: every 60 s read the queue; up to what it needs; to zero after
    10 idle minutes."""
    client = HerokuFormation(platform.app, platform.token, platform.url)
    idle_since: float | None = None
    current = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.wait(scale.real(60)):
            depth = conn.execute(
                "SELECT count(*) FROM pgdyno.jobs WHERE status IN ('ready', 'running')"
            ).fetchone()[0]
            now = time.monotonic()
            if depth:
                idle_since = None
                wanted = min(max_dynos, depth)
                if wanted > current:
                    current = client.scale("winston", wanted).quantity
            else:
                idle_since = idle_since or now
                if current and now - idle_since >= scale.real(600):
                    current = client.scale("winston", 0).quantity


def run_policy(
    policy: str, admin_url: str, workdir: Path, scale: Scale, boot: float, max_dynos: int
) -> dict[str, Any]:
    name = "cost_" + "".join(c if c.isalnum() else "_" for c in policy)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {}").format(pgsql.Identifier(name)))
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    url = make_conninfo(admin_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    folder = workdir / name
    folder.mkdir()
    (folder / "Procfile").write_text(procfile(policy, scale, max_dynos))
    env = {**os.environ, "PGDYNO_IMPORT": "pgdyno.demo", "PGDYNO_LOG_LEVEL": "WARNING"}
    platform = LocalPlatform(
        folder / "Procfile",
        url,
        output=io.StringIO(),
        env=env,
        kill_timeout=5,
        boot_time=scale.real(boot),
    )
    stop = threading.Event()
    platform.start()
    started = time.monotonic()
    try:
        if policy == "always on":
            platform.dynos.scale("winston", max_dynos)
        elif policy.startswith("poll"):
            threading.Thread(
                target=poller, args=(platform, url, scale, max_dynos, stop), daemon=True
            ).start()
        replay(url, started, scale)
        _sleep_until(started + scale.real(WINDOW_S))
        ended = time.monotonic()
        jobs = _jobs(url)
    finally:
        stop.set()
        platform.stop()
    return summarize(policy, platform.events, jobs, started, ended, scale)


def replay(url: str, started: float, scale: Scale) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for at, count, seconds in TRACE:
            _sleep_until(started + scale.real(at))
            for i in range(count):
                args = {"name": f"t{at:g}-{i}", "pause": scale.real(seconds)}
                conn.execute(
                    "INSERT INTO pgdyno.jobs (queue, task, args)"
                    " VALUES ('bench', 'demo.greet', %s)",
                    (json.dumps(args),),
                )


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))


def _jobs(url: str) -> list[tuple[float, float | None, float | None]]:
    """(created, started, finished) per job, epoch seconds."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT extract(epoch FROM created_at), extract(epoch FROM started_at),"
            " extract(epoch FROM finished_at) FROM pgdyno.jobs"
        ).fetchall()


def summarize(
    policy: str,
    events: list[tuple[float, float, str, dict[str, Any]]],
    jobs: list[tuple[float, float | None, float | None]],
    started: float,
    ended: float,
    scale: Scale,
) -> dict[str, Any]:
    up: dict[str, float] = {}
    billed = 0.0
    boots = 0
    for mono, _wall, event, fields in events:
        dyno = str(fields.get("dyno", ""))
        if not dyno.startswith("winston.") or mono < started:
            continue
        if event == "dyno_started":
            boots += 1
            up[dyno] = mono
        elif event == "dyno_exited" and dyno in up:
            billed += min(mono, ended) - up.pop(dyno)
    billed += sum(ended - since for since in up.values())
    busy = sum(float(done) - float(start) for _, start, done in jobs if start and done)
    waits = sorted(
        float(start if start is not None else math.inf) - float(created)
        for created, start, _ in jobs
    )
    return {
        "policy": policy,
        "billed_dyno_s": scale.trace(billed),
        "busy_dyno_s": scale.trace(busy),
        "efficiency": busy / billed if billed else 0.0,
        "boots": boots,
        "wait_p50_s": scale.trace(_percentile(waits, 50)),
        "wait_p99_s": scale.trace(_percentile(waits, 99)),
        "jobs": len(jobs),
        "jobs_done": sum(1 for _, _, done in jobs if done),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run(admin_url: str, workdir: Path, *, boot: float, time_scale: float, max_dynos: int) -> dict:
    scale = Scale(time_scale)
    results: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def one(policy: str) -> Callable[[], None]:
        def go() -> None:
            try:
                results[policy] = run_policy(policy, admin_url, workdir, scale, boot, max_dynos)
            except BaseException as exc:  # reported after the others finish
                errors.append(exc)

        return go

    threads = [threading.Thread(target=one(policy)) for policy in POLICIES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {
        "boot_s": boot,
        "time_scale": time_scale,
        "max_dynos": max_dynos,
        "window_s": WINDOW_S,
        "trace": TRACE,
        "policies": [results[policy] for policy in POLICIES],
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"cost of a bursty trace ({sum(n for _, n, _ in TRACE)} jobs, "
        f"{sum(n * s for _, n, s in TRACE):g} job-seconds, {result['window_s']:g} s window), "
        f"boot {result['boot_s']:g} s, max {result['max_dynos']} dynos, "
        f"time scale {result['time_scale']:g}"
    )
    print(
        f"{'policy':<30} {'billed':>8} {'busy':>7} {'effic.':>7} {'boots':>6} "
        f"{'wait p50':>9} {'p99':>7}"
    )
    for row in result["policies"]:
        print(
            f"{row['policy']:<30} {row['billed_dyno_s']:>7.0f}s {row['busy_dyno_s']:>6.0f}s "
            f"{row['efficiency']:>6.0%} {row['boots']:>6} {row['wait_p50_s']:>8.1f}s "
            f"{row['wait_p99_s']:>6.1f}s"
        )


def all_ran(result: dict[str, Any]) -> bool:
    """Every job of every policy ran within the window."""
    return all(row["jobs_done"] == row["jobs"] for row in result["policies"])
