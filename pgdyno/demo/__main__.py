"""`make run`: dynos spinning dynos, end to end, on the embedded Postgres.

Starts the embedded server (data kept in .pgdyno/), migrates, runs the local platform with the
demo's Procfile (pgdyno/demo/Procfile; julia: the dispatcher, at 1; winston: the worker, at 0)
and the demo's reports (pgdyno/demo/reports, found through the package), seeds a demo shop,
enqueues report jobs with the CLI and with psql, and waits while julia spins winston up, the
reports run, and winston scales itself back to zero. Ends with a summary and one fetched report;
exit status 0 when all of that happened.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import psycopg

from pgdyno import db
from pgdyno.demo import shop as reports_demo
from pgdyno.platform import LocalPlatform
from pgdyno.platform.postgres import EmbeddedPostgres, start_embedded_postgres
from pgdyno.web.local import browse_until_interrupted, start_local

TIMEOUT_S = 180
#: The demo's own Procfile and reports, inside the package: no checkout needed.
PROCFILE = Path(str(resources.files(__package__) / "Procfile"))
DEMO_ENV = {"PGDYNO_REPORTS_DIR": str(reports_demo.reports_dir())}
#: The demo shortens the linger (normally 30 s, about one dyno boot) so it ends quickly.
DEMO_LINGER = "3s"


def say(text: str) -> None:
    print(f"{'demo':<10} | {text}", flush=True)


def wait_for(what: str, predicate: Callable[[], object], timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def shell_quote(text: str) -> str:
    """`text` as one shell word a user can paste: in double quotes when that needs only `\"`
    escapes (readable SQL with JSON in it), else shlex's single quotes."""
    if any(char in text for char in "$`\\!"):
        return shlex.quote(text)
    return '"' + text.replace('"', '\\"') + '"'


def enqueue_demo_jobs(url: str) -> list[int]:
    """Report jobs: two with `pgdyno report run`, one with psql (a client that knows nothing
    of pgdyno)."""
    cli = str(Path(sys.executable).with_name("pgdyno"))
    ids = []
    for name, params in (
        ("revenue_by_month", ["since=2025-01-01"]),
        ("orders_export", ["since=2025-07-01"]),
    ):
        args = [
            cli,
            "report",
            "run",
            name,
            *(a for p in params for a in ("--param", p)),
            "--database-url",
            url,
        ]
        out = subprocess.run(
            args, check=True, capture_output=True, text=True, env={**os.environ, **DEMO_ENV}
        )
        ids.append(int(out.stdout))
        flags = " ".join("--param " + p for p in params)
        say(f"pgdyno report run {name} {flags} -> job {ids[-1]}")
    sql = (
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('reports', 'report', "
        '\'{"name": "top_customers", "params": {"limit": 5}}\') RETURNING id'
    )
    out = subprocess.run(
        [EmbeddedPostgres.client_binary("psql"), url, "-qtAX", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    ids.append(int(out.stdout.split()[0]))
    say(f"psql {shlex.quote(url)} -c {shell_quote(sql)} -> job {ids[-1]}")
    return ids


def show_reports(url: str, ids: list[int]) -> None:
    """What users run next: `pgdyno report show` for each job, `report fetch` for one."""
    cli = str(Path(sys.executable).with_name("pgdyno"))
    for job_id in ids:
        say(f"pgdyno report show {job_id}")
        out = subprocess.run(
            [cli, "report", "show", str(job_id), "--database-url", url],
            env={**os.environ, **DEMO_ENV},
            check=True,
            capture_output=True,
            text=True,
        )
        for line in out.stdout.splitlines():
            say("  " + line)
    say(f"pgdyno report fetch {ids[-1]}")
    out = subprocess.run(
        [cli, "report", "fetch", str(ids[-1]), "--database-url", url],
        check=True,
        capture_output=True,
        text=True,
    )
    for line in out.stdout.splitlines():
        say("  " + line)


def summary(conn: psycopg.Connection, ids: list[int], first_event: int, t0: float) -> None:
    say("summary")
    rows = conn.execute(
        "SELECT id, task, status::text, attempts, round(extract(epoch FROM finished_at - "
        "started_at)::numeric, 2), result FROM pgdyno.jobs WHERE id = ANY(%s) ORDER BY id",
        (ids,),
    ).fetchall()
    done = sum(1 for row in rows if row[2] == "done")
    say(f"  jobs done: {done}/{len(ids)}")
    for job_id, task, status, attempts, seconds, result in rows:
        facts = ""
        if isinstance(result, dict) and "report" in result:
            facts = (
                f"{result['report']}, {result['rows']:,} rows, peak worker memory "
                f"{result['worker_peak_rss_bytes'] / 2**20:.1f} MiB"
            )
        say(
            f"    job {job_id} {task} {status} after {attempts} attempt(s), "
            f"ran {seconds}s{': ' + facts if facts else ''}"
        )
    say("  scale events (seconds after the jobs were enqueued):")
    for at, ptype, from_q, to_q, actor, reason, outcome in conn.execute(
        "SELECT extract(epoch FROM at), process_type, from_quantity, to_quantity, actor,"
        " reason, outcome FROM pgdyno.scale_events WHERE id > %s ORDER BY id",
        (first_event,),
    ).fetchall():
        say(
            f"    +{float(at) - t0:6.2f}s {ptype} {from_q} -> {to_q} by {actor} ({reason}; "
            f"{outcome})"
        )


def main() -> int:
    url = start_embedded_postgres()
    say(f"embedded Postgres at {url} (data in .pgdyno/)")
    with psycopg.connect(url, autocommit=True) as conn:
        first_event = db.scalar(conn, "SELECT coalesce(max(id), 0) FROM pgdyno.scale_events")
        conn.execute("DELETE FROM pgdyno.scale_rules")
        env = {**os.environ, **DEMO_ENV, "PGDYNO_LINGER": DEMO_LINGER}
        platform = LocalPlatform(PROCFILE, url, env=env)
        say(
            f"starting the local platform with {PROCFILE} "
            f"(linger shortened to {DEMO_LINGER} for the demo)"
        )
        platform.start()
        dashboard = start_local(url, say)  # watch it live: the timeline, the jobs, the reports
        try:
            wait_for(
                "julia's dispatcher",
                lambda: db.scalar(conn, "SELECT count(*) FROM pgdyno.scale_rules") > 0,
            )
            reports_demo.seed(conn, customers=2_000, orders=200_000)
            say(
                "seeded the demo shop: 2,000 customers, 200,000 orders "
                "(demo.customers, demo.orders)"
            )
            t0 = time.time()
            ids = enqueue_demo_jobs(url)
            wait_for("winston to start", lambda: platform.dynos.alive("winston"))
            wait_for(
                "the jobs to finish",
                lambda: (
                    db.scalar(
                        conn,
                        "SELECT count(*) FROM pgdyno.jobs WHERE id = ANY(%s) AND status IN "
                        "('done', 'failed', 'cancelled')",
                        (ids,),
                    )
                    == len(ids)
                ),
            )
            wait_for(
                "winston to scale back to zero",
                lambda: (
                    platform.dynos.quantities["winston"] == 0
                    and not platform.dynos.alive("winston")
                ),
            )
        finally:
            platform.stop()
        summary(conn, ids, first_event, t0)
        show_reports(url, ids)
        failed = db.scalar(
            conn, "SELECT count(*) FROM pgdyno.jobs WHERE id = ANY(%s) AND status <> 'done'", (ids,)
        )
    browse_until_interrupted(dashboard, say)
    EmbeddedPostgres(Path(".pgdyno") / "postgres").stop()
    say(
        "done; explore further with `pgdyno dev` in a folder with a Procfile (examples/heroku "
        "in the repository), `pgdyno status` and `pgdyno report list`"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
