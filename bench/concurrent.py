"""W5 concurrent enqueue: many clients inserting one job per transaction at once (a web app).

pgbench runs one INSERT per transaction (prepared, autocommit) from 1, 8 and 32 clients for a
few seconds, on the table of each variant in turn, the variants and client counts taking turns
round after round (the machine is shared: a ratio taken within one round is what counts):

- pgdyno: `INSERT INTO pgdyno.jobs (queue, task, args)` as shipped, as pgdyno's own role;
- pgdyno enqueue role: the same, as a least-privilege role (`pgdyno grant-enqueue`);
- pgdyno skip_notify: the same with `pgdyno.skip_notify = on` (the trigger checks, never
  notifies);
- pgdyno no trigger: the same with the enqueue trigger disabled;
- plain table: a table with pgdyno.jobs' columns, defaults and identity and a primary key,
  nothing else (no partitions, CHECKs, other indexes or trigger): the limit;
- PgQueuer and Procrastinate: a plain INSERT into each one's own table, whose triggers notify.

No worker runs: nobody waits for these jobs, the case of a web app enqueueing faster than its
workers run (pgdyno's enqueue trigger notifies only for a queue a worker or the dispatcher waits
on). While each run lasts, a sampler counts the sessions waiting for the NOTIFY commit lock
(pg_locks: the lock on object 0 of pg_database that a notifying transaction takes at commit)
every 20 ms; the table gives the mean in brackets.

Run alone: python -m bench concurrent [--quick], or python -m bench.concurrent [--seconds 5]
[--rounds 2] [--clients 1,8,32] [--ladder] [--bin /usr/lib/postgresql/15/bin]. --ladder adds
the steps between the plain table and pgdyno.jobs (what each feature of the table costs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.registry import Figure, benchmark
from bench.runner import Context

CLIENTS = (1, 8, 32)
ROUNDS = 2
SECONDS = 5
SAMPLE_S = 0.020
ENQUEUE_ROLE = "bench_enqueue"
_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.MULTILINE)

#: The columns of pgdyno.jobs without its constraints, indexes, partitions or trigger.
PLAIN_TABLE = """
CREATE TABLE public.plain_jobs (
    LIKE pgdyno.jobs INCLUDING DEFAULTS INCLUDING IDENTITY, PRIMARY KEY (id)
)
"""
PGDYNO_INSERT = "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('bench', 'noop', '{}');"


@dataclass(frozen=True)
class Variant:
    """One column of the table: which database, what each transaction runs, as whom."""

    name: str
    #: The system whose template database it runs in ("pgdyno", "pgqueuer", "procrastinate").
    system: str
    script: str
    #: What to empty between runs.
    table: str
    #: SQL run once on the variant's fresh database (as the owner).
    setup: str = ""
    #: libpq startup options (PGOPTIONS), e.g. a session setting.
    options: str = ""
    user: str | None = None


VARIANTS = (
    Variant("pgdyno", "pgdyno", PGDYNO_INSERT, "pgdyno.jobs"),
    Variant("pgdyno enqueue role", "pgdyno", PGDYNO_INSERT, "pgdyno.jobs", user=ENQUEUE_ROLE),
    Variant(
        "pgdyno skip_notify",
        "pgdyno",
        PGDYNO_INSERT,
        "pgdyno.jobs",
        options="-c pgdyno.skip_notify=on",
    ),
    Variant(
        "pgdyno no trigger",
        "pgdyno",
        PGDYNO_INSERT,
        "pgdyno.jobs",
        setup="ALTER TABLE pgdyno.jobs DISABLE TRIGGER jobs_notify_inserted",
    ),
    Variant(
        "plain table",
        "pgdyno",
        "INSERT INTO plain_jobs (queue, task, args) VALUES ('bench', 'noop', '{}');",
        "plain_jobs",
        setup=PLAIN_TABLE,
    ),
    Variant(
        "pgqueuer",
        "pgqueuer",
        "INSERT INTO pgqueuer (priority, entrypoint, payload, status)"
        " VALUES (0, 'noop', NULL, 'queued');",
        "pgqueuer",
    ),
    Variant(
        "procrastinate",
        "procrastinate",
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args)"
        " VALUES ('bench', 'noop', '{}');",
        "procrastinate_jobs",
    ),
)

#: --ladder: the plain table grown step by step into pgdyno.jobs (without its trigger).
LADDER = (
    Variant(
        "plain + CHECKs",
        "pgdyno",
        "INSERT INTO ladder_jobs (queue, task, args) VALUES ('bench', 'noop', '{}');",
        "ladder_jobs",
        setup="CREATE TABLE public.ladder_jobs (LIKE pgdyno.jobs INCLUDING DEFAULTS"
        " INCLUDING IDENTITY INCLUDING CONSTRAINTS, PRIMARY KEY (id))",
    ),
    Variant(
        "plain + CHECKs + claim index",
        "pgdyno",
        "INSERT INTO ladder_jobs (queue, task, args) VALUES ('bench', 'noop', '{}');",
        "ladder_jobs",
        setup="CREATE TABLE public.ladder_jobs (LIKE pgdyno.jobs INCLUDING DEFAULTS"
        " INCLUDING IDENTITY INCLUDING CONSTRAINTS, PRIMARY KEY (id));"
        " CREATE INDEX ON public.ladder_jobs (queue, priority DESC, run_at, id)"
        " WHERE status = 'ready'",
    ),
    Variant(
        "partitioned, no CHECKs or claim index",
        "pgdyno",
        "INSERT INTO ladder_jobs (queue, task, args) VALUES ('bench', 'noop', '{}');",
        "ladder_jobs",
        setup="CREATE TABLE public.ladder_jobs (LIKE pgdyno.jobs INCLUDING DEFAULTS"
        " INCLUDING IDENTITY, PRIMARY KEY (id, status)) PARTITION BY LIST (status);"
        " CREATE TABLE public.ladder_active PARTITION OF public.ladder_jobs"
        " FOR VALUES IN ('ready', 'running');"
        " CREATE TABLE public.ladder_finished PARTITION OF public.ladder_jobs"
        " FOR VALUES IN ('done', 'failed', 'cancelled')",
    ),
)


class NotifyLockWaiters(threading.Thread):
    """Counts, every SAMPLE_S, the sessions waiting for the NOTIFY commit lock.

    A transaction that sent NOTIFY locks object 0 of pg_database (a shared object: database 0)
    in AccessExclusive mode at commit, until its commit is durable (PreCommit_Notify); every
    other notifying commit waits for it there."""

    QUERY = (
        "SELECT count(*) FILTER (WHERE NOT granted) FROM pg_locks"
        " WHERE locktype = 'object' AND database = 0"
        "   AND classid = 'pg_database'::regclass AND objid = 0"
    )

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.halt.wait(SAMPLE_S):
                self.samples.append(int(conn.execute(self.QUERY).fetchone()[0]))  # type: ignore[index]

    def mean(self) -> float:
        self.halt.set()
        self.join()
        return statistics.fmean(self.samples) if self.samples else 0.0


@dataclass
class Server:
    """What a run needs of a server: an admin URL, URLs of databases, its binaries."""

    admin_url: str
    url_of: Any  # (database, user) -> URL
    pgbench: str
    checkpoint: Any  # () -> None
    templates: dict[str, str] = field(default_factory=dict)


def run_pgbench(
    server: Server, url: str, variant: Variant, script: Path, clients: int, seconds: float
) -> dict[str, float]:
    """One timed pgbench run; returns jobs/s and the mean number of notify-lock waiters."""
    argv = [
        server.pgbench,
        "--no-vacuum",
        "-M",
        "prepared",
        "-f",
        str(script),
        "-c",
        str(clients),
        "-j",
        str(min(clients, 4)),
        "-T",
        str(max(1, round(seconds))),
        url,
    ]
    env = {**os.environ, "PGOPTIONS": variant.options} if variant.options else None
    waiters = NotifyLockWaiters(server.admin_url)
    waiters.start()
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=seconds + 120, env=env
        )
    finally:
        mean_waiters = waiters.mean()
    match = _TPS.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(
            f"pgbench ({variant.name}, {clients} clients) failed ({result.returncode}): "
            f"{(result.stderr or result.stdout)[-800:]}"
        )
    return {"jobs_per_s": float(match.group(1)), "lock_waiters": mean_waiters}


def prepare(conn: psycopg.Connection, variant: Variant) -> None:
    """The variant's own set-up on its fresh database (tables, roles' grants)."""
    if variant.setup:
        conn.execute(variant.setup)  # type: ignore[arg-type]
    if variant.user:
        from pgdyno import roles

        exists = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (variant.user,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(variant.user)))
        roles.grant_enqueue(conn, variant.user, returning_id=False)


def empty(url: str, table: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(table)))


def measure(
    databases: dict[str, str],
    server: Server,
    variants: tuple[Variant, ...],
    clients: tuple[int, ...],
    rounds: int,
    seconds: float,
    workdir: Path,
    say: Any = print,
) -> dict[str, dict[int, list[dict[str, float]]]]:
    """Every variant at every client count, `rounds` times, taking turns; raw samples."""
    scripts = {}
    for variant in variants:
        path = workdir / f"concurrent-{len(scripts)}.sql"
        path.write_text(variant.script + "\n")
        scripts[variant.name] = path
    samples: dict[str, dict[int, list[dict[str, float]]]] = {v.name: {} for v in variants}
    for round_no in range(rounds):
        for count in clients:
            for variant in variants:
                url = databases[variant.name]
                if variant.user:
                    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
                    url = server.url_of(dbname, variant.user)
                empty(databases[variant.name], variant.table)
                server.checkpoint()
                result = run_pgbench(server, url, variant, scripts[variant.name], count, seconds)
                samples[variant.name].setdefault(count, []).append(result)
                say(
                    f"  round {round_no + 1} {variant.name:>36} x{count:<2}: "
                    f"{result['jobs_per_s']:8,.0f} jobs/s  [{result['lock_waiters']:.1f}]"
                )
    return samples


def summarize(
    samples: dict[str, dict[int, list[dict[str, float]]]],
) -> dict[str, dict[int, dict[str, Any]]]:
    """Medians, ranges, and per round the ratio of pgdyno to skip_notify (paired)."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for name, by_count in samples.items():
        for count, runs in by_count.items():
            rates = [r["jobs_per_s"] for r in runs]
            waiters = [r["lock_waiters"] for r in runs]
            entry: dict[str, Any] = {
                "jobs_per_s": statistics.median(rates),
                "range": [round(min(rates)), round(max(rates))],
                "rounds": [round(r) for r in rates],
                "lock_waiters": round(statistics.median(waiters), 1),
            }
            base = samples.get("pgdyno skip_notify", {}).get(count)
            if base and name != "pgdyno skip_notify":
                ratios = [
                    r["jobs_per_s"] / b["jobs_per_s"] for r, b in zip(runs, base, strict=False)
                ]
                entry["x_skip_notify_per_round"] = [round(x, 3) for x in ratios]
                entry["x_skip_notify"] = round(statistics.median(ratios), 3)
            out.setdefault(name, {})[count] = entry
    return out


def table(summary: dict[str, dict[int, dict[str, Any]]], clients: tuple[int, ...]) -> str:
    """Markdown: jobs/s (median, range) [notify-lock waiters] per variant and client count."""
    head = "| variant | " + " | ".join(f"{c} client{'s' * (c > 1)}" for c in clients) + " |"
    lines = [head, "| --- |" + " ---: |" * len(clients)]
    for name, by_count in summary.items():
        cells = []
        for count in clients:
            entry = by_count.get(count)
            if entry is None:
                cells.append("—")
                continue
            low, high = entry["range"]
            cell = f"{entry['jobs_per_s']:,.0f} ({low:,}-{high:,})"
            if entry["lock_waiters"] >= 0.05:
                cell += f" [{entry['lock_waiters']:.1f}]"
            if "x_skip_notify" in entry and name.startswith("pgdyno"):
                cell += f" {entry['x_skip_notify']:.0%}"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def bench_databases(ctx: Context, variants: tuple[Variant, ...]) -> Iterator[dict[str, str]]:
    """A fresh database per variant, cloned from its system's template, set up."""
    by_name = {system.name: system for system in ctx.systems}
    urls: dict[str, str] = {}
    try:
        for variant in variants:
            system = by_name.get(variant.system)
            if system is None:
                continue
            template = ctx.server.template(f"tpl_{system.name}", system.install)
            url = ctx.server.fresh_database(template, f"w5_{variant.system}")
            urls[variant.name] = url
            with psycopg.connect(url, autocommit=True) as conn:
                prepare(conn, variant)
        yield urls
    finally:
        for url in urls.values():
            ctx.server.drop_database(url)


@benchmark("concurrent", "W5: one job per transaction from 1, 8 and 32 clients at once", order=25)
def concurrent(ctx: Context) -> list[Figure]:
    quick = ctx.options.drain_jobs < 20_000
    seconds = 2.0 if quick else SECONDS
    rounds = 1 if quick else ROUNDS
    server = Server(
        ctx.server.admin_url,
        lambda db, user: ctx.server.server.url(db, user),
        ctx.server.binary("pgbench"),
        ctx.server.checkpoint,
    )
    with bench_databases(ctx, VARIANTS) as urls:
        variants = tuple(v for v in VARIANTS if v.name in urls)
        samples = measure(urls, server, variants, CLIENTS, rounds, seconds, ctx.workdir, ctx.say)
    summary = summarize(samples)
    ctx.say(table(summary, CLIENTS))
    figures = []
    for count in CLIENTS:
        figure = Figure(
            f"concurrent_enqueue_{count}c",
            f"W5 enqueue, {count} client{'s' * (count > 1)} at once, one job per transaction",
            "jobs/s",
            "higher",
        )
        if count == 32:
            figure.target = "≥ 75% of skip_notify"
            figure.goals = [("x_of:pgdyno skip_notify", 0.75)]
        elif count == 8:
            figure.target = "≥ 85% of skip_notify"
            figure.goals = [("x_of:pgdyno skip_notify", 0.85)]
        for name, by_count in summary.items():
            entry = by_count.get(count)
            if entry is None:
                continue
            figure.values[name] = entry["jobs_per_s"]
            figure.detail[name] = entry
        figures.append(figure)
    waiters = Figure(
        "concurrent_enqueue_32c_lock_waiters",
        "W5 enqueue, 32 clients: sessions waiting for the NOTIFY lock (mean)",
        "sessions",
        "lower",
    )
    for name, by_count in summary.items():
        if 32 in by_count:
            waiters.values[name] = by_count[32]["lock_waiters"]
    figures.append(waiters)
    return figures


def main(argv: list[str]) -> int:
    """Stand-alone: its own server (embedded, or --bin), its table and JSON."""
    from bench.server import BenchServer
    from bench.systems import catalog

    parser = argparse.ArgumentParser(prog="python -m bench.concurrent", description=__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    parser.add_argument("--ladder", action="store_true", help="add the plain→pgdyno steps")
    parser.add_argument("--bin", default=None, help="PostgreSQL binaries (default: embedded)")
    args = parser.parse_args(argv)
    clients = tuple(int(c) for c in args.clients.split(","))
    variants = VARIANTS + (LADDER if args.ladder else ())
    if args.variants:
        wanted = set(args.variants.split(","))
        variants = tuple(v for v in variants if v.name in wanted)
    from bench.runner import Context, Options

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgdyno-w5-")))
        bench_server = stack.enter_context(BenchServer.run(bin_dir=args.bin))
        names = tuple(sorted({v.system for v in variants}))
        ctx = Context(bench_server, Options(), catalog.build(bench_server, names), workdir)
        server = Server(
            bench_server.admin_url,
            lambda db, user: bench_server.server.url(db, user),
            bench_server.binary("pgbench"),
            bench_server.checkpoint,
        )
        with bench_databases(ctx, variants) as urls:
            samples = measure(
                urls, server, variants, clients, args.rounds, args.seconds, workdir, print
            )
        version = bench_server.describe()["server_version"]
    summary = summarize(samples)
    print(f"\nPostgreSQL {version}, {args.seconds:g} s per run, median of {args.rounds}")
    print(table(summary, clients))
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"concurrent-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "postgres": version,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "summary": {n: {str(c): e for c, e in s.items()} for n, s in summary.items()},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
