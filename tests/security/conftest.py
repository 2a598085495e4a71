"""Fixtures of the security tests: databases on the embedded server and on PostgreSQL 15, the
enqueue role and its connection, and the system under attack (tests/security/security_support.py
holds what the tests import)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from fake_heroku import FakeHeroku
from helpers import REPO_DIR, TESTS_DIR, PgdynoProcess, server_dir
from psycopg.conninfo import make_conninfo
from security_support import (
    PG15_BIN,
    SECURITY_DIR,
    Attacked,
    Server,
    grant_enqueue,
    login_role,
    make_template,
)


@pytest.fixture(scope="session")
def pg15_server() -> Iterator[Server]:
    """The system's PostgreSQL 15, started once per session (skipped where not installed)."""
    if not (PG15_BIN / "initdb").exists():
        if os.environ.get("PGDYNO_REQUIRE_PG15") == "1":
            pytest.fail(f"PGDYNO_REQUIRE_PG15=1 but {PG15_BIN}/initdb is missing")
        pytest.skip("PostgreSQL 15 binaries are not installed")
    from pgdyno.platform.postgres import EmbeddedPostgres

    with server_dir() as path:
        server = EmbeddedPostgres(
            path / "pg15",
            bin_dir=PG15_BIN,
            settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
        )
        try:
            url = server.start()
            make_template(url, "pgdyno_sec_template")
            yield Server("pg15", url, "pgdyno_sec_template")
        finally:
            server.destroy()


@pytest.fixture
def server(request: pytest.FixtureRequest, pg_admin_url: str, template_db: str) -> Server:
    """The embedded server, or PostgreSQL 15 for tests parametrized with indirect "pg15"."""
    if getattr(request, "param", "embedded") == "pg15":
        return request.getfixturevalue("pg15_server")
    return Server("embedded", pg_admin_url, template_db)


@pytest.fixture
def db(server: Server) -> Iterator[str]:
    """A fresh migrated database on `server`; its owner's URL."""
    with server.database() as url:
        yield url


@pytest.fixture
def owner(db: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection as the database's owner (a superuser, as pgdyno's own role)."""
    with psycopg.connect(db, autocommit=True) as conn:
        yield conn


@pytest.fixture
def enqueue_url(owner: psycopg.Connection, db: str) -> Iterator[str]:
    """The URL of an enqueue role (only the documented grants) on the test's database."""
    with login_role(owner, "app_enqueue") as name:
        grant_enqueue(owner, name, returning_id=False)
        yield make_conninfo(db, user=name, password="pw-of-the-test")


@pytest.fixture
def attacker(enqueue_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection as the enqueue role."""
    with psycopg.connect(enqueue_url, autocommit=True) as conn:
        yield conn


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so `attack` can print the logs of a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def attack(request: pytest.FixtureRequest) -> Iterator[Callable[..., Attacked]]:
    """attack(database_url, conn, **worker_env) -> Attacked, started and ready; stopped after."""
    started: list[Attacked] = []
    servers: list[FakeHeroku] = []

    def start(
        database_url: str,
        conn: psycopg.Connection,
        *,
        queues: Sequence[str] = ("q",),
        imports: Sequence[str] = ("sample_tasks",),
        workers: int = 1,
        **worker_env: str,
    ) -> Attacked:
        heroku = FakeHeroku(types={"winston": 0}).__enter__()
        servers.append(heroku)
        args = ["worker", "--concurrency", "4"]
        for queue in queues:
            args += ["--queue", queue]
        for module in imports:
            args += ["--import", module]
        pythonpath = os.pathsep.join([str(SECURITY_DIR), str(TESTS_DIR), str(REPO_DIR)])
        running = [
            PgdynoProcess(
                args,
                database_url,
                PGDYNO_POLL_INTERVAL="0.5",
                PGDYNO_LEASE="5",
                PYTHONPATH=pythonpath,
                **worker_env,
            )
            for _ in range(workers)
        ]
        dispatcher = PgdynoProcess(
            ["dispatcher", "--scale", "q=winston,max=2", "--reconcile-interval", "1"],
            database_url,
            HEROKU_API_URL=heroku.url,
            HEROKU_APP_NAME=heroku.app,
            HEROKU_API_KEY=heroku.token,
        )
        attacked = Attacked(database_url, heroku, running, dispatcher, queues[0])
        started.append(attacked)
        attacked.wait_ready(conn)
        return attacked

    yield start
    failed = getattr(request.node, "rep_call", None)
    for attacked in started:
        if failed is not None and failed.failed:
            for proc in attacked.processes:
                print(f"--- pgdyno {proc.args[0]} ---\n{proc.output()[-6000:]}")
        attacked.close()
    for heroku in servers:
        heroku.__exit__()
