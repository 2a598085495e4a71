"""What the security tests share (their fixtures are in conftest.py): servers and databases,
the enqueue role, the CLI in-process, strict JSON, the system under attack, and an HTTP server
that records the uploads it gets.

Each scenario is played as the enqueue role: a role with only the documented grants
(`pgdyno grant-enqueue`; on a pgdyno that predates it, the grants its README documented:
USAGE on the schema, INSERT on pgdyno.jobs, SELECT on its id), against a real server. The
scenarios whose outcome depends on the server's version run on both the embedded server and
the system's PostgreSQL 15 (/usr/lib/postgresql/15/bin), started once per test session.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from fake_heroku import FakeHeroku
from helpers import PgdynoProcess, drop_login_role, wait_for_status, wait_until
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgdyno
from pgdyno import sql
from pgdyno.cli import main
from pgdyno.migrate import migrate

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
SECURITY_DIR = Path(__file__).resolve().parent
_names = itertools.count()


# --- servers and databases -----------------------------------------------------------------------


@dataclass
class Server:
    """A Postgres server the tests may create databases and roles on, with a migrated template."""

    name: str
    admin_url: str
    template: str

    @property
    def version(self) -> int:
        with psycopg.connect(self.admin_url) as conn:
            return conn.info.server_version // 10000

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh migrated database (owner: the admin, a superuser); its URL."""
        name = f"pgdyno_sec_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(
                pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    pgsql.Identifier(name), pgsql.Identifier(self.template)
                )
            )
        try:
            yield make_conninfo(self.admin_url, dbname=name)
        finally:
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(
                    pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        pgsql.Identifier(name)
                    )
                )


def make_template(admin_url: str, name: str) -> None:
    """Create database `name` and migrate it: the template of the tests' databases."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {}").format(pgsql.Identifier(name)))
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    with psycopg.connect(make_conninfo(admin_url, dbname=name), autocommit=True) as conn:
        migrate(conn)


@contextlib.contextmanager
def database_at_0005(server: Server) -> Iterator[str]:
    """A database with pgdyno's migrations up to 0005 only: as before this issue."""
    with server.database() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA pgdyno CASCADE")
        conn.execute(sql.query("schema_create"))
        conn.execute(sql.query("schema_migrations_create"))
        for version, name, text in sql.migrations():
            if version <= 5:
                with conn.transaction():
                    conn.execute(text)
                    conn.execute(
                        sql.query("schema_migration_record"), {"version": version, "name": name}
                    )
        yield url


#: For scenarios whose outcome depends on the server's version (the `server` fixture).
BOTH_SERVERS = pytest.mark.parametrize("server", ["embedded", "pg15"], indirect=True)


# --- the enqueue role ----------------------------------------------------------------------------


def grant_enqueue(conn: psycopg.Connection, role: str, returning_id: bool) -> None:
    """The documented recipe: `pgdyno grant-enqueue`, or, on a pgdyno without it, the grants
    its README documented."""
    try:
        from pgdyno import roles
    except ImportError:
        name = pgsql.Identifier(role)
        conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA pgdyno TO {}").format(name))
        conn.execute(pgsql.SQL("GRANT INSERT ON pgdyno.jobs TO {}").format(name))
        if returning_id:
            conn.execute(pgsql.SQL("GRANT SELECT (id) ON pgdyno.jobs TO {}").format(name))
        return
    roles.grant_enqueue(conn, role, returning_id=returning_id)


@contextlib.contextmanager
def login_role(conn: psycopg.Connection, prefix: str) -> Iterator[str]:
    """A LOGIN role with a password, dropped afterwards (its sessions ended); its name."""
    name = f"{prefix}_{os.getpid()}_{next(_names)}"
    role = pgsql.Identifier(name)
    conn.execute(pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw-of-the-test'").format(role))
    try:
        yield name
    finally:
        drop_login_role(conn, name)


# --- the system under attack --------------------------------------------------------------------


def cli(database_url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """`pgdyno ARGS --database-url URL` in-process (click's CliRunner); the result."""
    return CliRunner().invoke(
        main,
        [*args, "--database-url", database_url],
        env={"DATABASE_URL": None, "PGDYNO_LOG_LEVEL": "WARNING", **(env or {})},
    )


def _no_constant(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity (which Python writes) are refused."""
    return json.loads(text, parse_constant=_no_constant)


@dataclass
class Attacked:
    """Workers (concurrency 4) on queue q and a dispatcher scaling q=winston on a fake
    Heroku: the system every scenario must leave running."""

    database_url: str
    heroku: FakeHeroku
    workers: list[PgdynoProcess]
    dispatcher: PgdynoProcess
    queue: str = "q"

    @property
    def worker(self) -> PgdynoProcess:
        return self.workers[0]

    @property
    def processes(self) -> list[PgdynoProcess]:
        return [*self.workers, self.dispatcher]

    def wait_ready(self, conn: psycopg.Connection) -> None:
        self.dispatcher.wait_for_output("dispatcher_leading", timeout=30)
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE"
                    " 'pgdyno listen %%' AND query LIKE 'LISTEN%%' AND datname = current_database()"
                ).fetchone()[0]
                == len(self.workers)
            ),
            timeout=30,
            message="the workers to LISTEN",
        )

    def assert_unharmed(self, conn: psycopg.Connection) -> None:
        """The worker and the dispatcher still run, `pgdyno status --json` answers JSON, and a
        job enqueued now runs to done."""
        for proc in self.processes:
            assert proc.proc.poll() is None, (
                f"pgdyno {proc.args[0]} exited {proc.proc.returncode}:\n{proc.output()[-3000:]}"
            )
        status = cli(self.database_url, "status", "--json")
        assert status.exit_code == 0, status.output
        strict_json(status.stdout)
        innocent = pgdyno.enqueue(conn, "noop", queue=self.queue)
        wait_for_status(conn, innocent, "done", timeout=30)
        for proc in self.processes:
            assert "Traceback" not in proc.output(), proc.output()[-3000:]

    def stop(self) -> None:
        """SIGTERM every process; each exits 0."""
        for proc in self.processes:
            if proc.proc.poll() is None:
                proc.signal(signal.SIGTERM)
        for proc in self.processes:
            assert proc.wait(60) == 0, proc.output()[-3000:]

    def close(self) -> None:
        for proc in self.processes:
            proc.close()


def db_user(url: str) -> str:
    return str(conninfo_to_dict(url)["user"])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Listener

    def do_PUT(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                self.rfile.read(size + 2)
            self.rfile.readline()
        else:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.path, dict(self.headers)))
        status, headers, body = self.server.answers.get(self.path, (200, {}, b"stored"))
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT

    def log_message(self, *_: Any) -> None:
        pass


class Listener(ThreadingHTTPServer):
    """An HTTP server on a loopback address that records every request it gets."""

    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _Handler)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"
