"""What the enqueue contract (migration 0009) costs an enqueue, A/B on one server.

The enqueue trigger of 0009 checks each statement's rows (who may set which column, names,
args' size, depth and numbers) before it notifies; the one of 0001 only notified. This swaps
the two trigger functions on one database between rounds, so that both see the same server,
data and machine load (this project's machine is shared: a run of `make bench` alone moves by
2x between runs), and measures:

- bulk: pgdyno.enqueue_many of --bulk jobs (text COPY) as pgdyno's own role;
- single: --single pgdyno.enqueue calls, one transaction each, as pgdyno's own role;
- bulk as an enqueue role (0009 only): enqueue_many through INSERT ... unnest RETURNING id,
  the path of a role that may not write ids.

Args are {"id": n, "to": ["a@b.c"]}. synchronous_commit is off, so the figures are the
statements' cost, not the disk's. Run: python -m bench.enqueue_contract [--rounds 7].
Prints medians (jobs/s) and the paired change per round, and writes
bench/results/enqueue_contract-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

import pgdyno
from pgdyno import roles
from pgdyno.migrate import migrate
from pgdyno.platform.postgres import EmbeddedPostgres

RESULTS = Path(__file__).resolve().parent / "results"

#: The enqueue trigger function as migration 0001 created it (no checks).
TRIGGER_0001 = """
CREATE OR REPLACE FUNCTION pgdyno.notify_jobs_inserted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('pgdyno.skip_notify', true), '') IN ('on', 'true', '1') THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('pgdyno_jobs', q.queue)
       FROM (SELECT DISTINCT queue FROM inserted_jobs
              WHERE status = 'ready' AND run_at <= now()) AS q;
    RETURN NULL;
END
$$
"""


def trigger_0009(conn: psycopg.Connection) -> str:
    return str(
        conn.execute(
            "SELECT pg_get_functiondef('pgdyno.notify_jobs_inserted()'::regprocedure)"
        ).fetchone()[0]
    )


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enqueue_contract", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bulk", type=int, default=20_000)
    parser.add_argument("--single", type=int, default=2_000)
    args = parser.parse_args(argv)
    server = EmbeddedPostgres(
        Path(tempfile.mkdtemp(prefix="pgdyno-bench-contract-")) / "pg",
        settings={"synchronous_commit": "off"},
    )
    samples: dict[str, list[float]] = {}
    try:
        url = server.start()
        with psycopg.connect(url, autocommit=True) as owner:
            migrate(owner)
            owner.execute("CREATE ROLE bench_enqueue LOGIN")
            roles.grant_enqueue(owner, "bench_enqueue", returning_id=True)
            new_trigger = trigger_0009(owner)
            client = psycopg.connect(make_conninfo(url, user="bench_enqueue"), autocommit=True)
            jobs = [
                {"task": "noop", "queue": "q", "args": {"id": n, "to": ["a@b.c"]}}
                for n in range(args.bulk)
            ]

            def single() -> None:
                for n in range(args.single):
                    pgdyno.enqueue(owner, "noop", {"id": n, "to": ["a@b.c"]}, queue="q")

            for _ in range(args.rounds):
                for variant, definition in (("0001", TRIGGER_0001), ("0009", new_trigger)):
                    owner.execute(definition)
                    owner.execute("TRUNCATE pgdyno.jobs")
                    owner.execute("CHECKPOINT")
                    seconds = timed(lambda: pgdyno.enqueue_many(owner, jobs))
                    samples.setdefault(f"bulk_{variant}", []).append(args.bulk / seconds)
                    seconds = timed(single)
                    samples.setdefault(f"single_{variant}", []).append(args.single / seconds)
                    if variant == "0009":
                        owner.execute("TRUNCATE pgdyno.jobs")
                        seconds = timed(lambda: pgdyno.enqueue_many(client, jobs))
                        samples.setdefault("bulk_enqueue_role_0009", []).append(args.bulk / seconds)
            client.close()
    finally:
        server.destroy()
    result: dict[str, Any] = {
        name: {
            "median_jobs_per_s": round(statistics.median(values)),
            "rounds": [round(v) for v in values],
        }
        for name, values in samples.items()
    }
    for workload in ("bulk", "single"):
        # Each round's 0009 against the same round's 0001 (run just before it): the median of
        # these ratios shrugs off the machine's load better than a ratio of medians.
        before, after = samples[f"{workload}_0001"], samples[f"{workload}_0009"]
        ratios = [b / a for a, b in zip(before, after, strict=True)]
        result[f"{workload}_change_pct"] = round((statistics.median(ratios) - 1) * 100, 1)
    for name, value in result.items():
        print(f"{name:>24}: {value}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"enqueue_contract-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
