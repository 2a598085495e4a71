"""Fixtures of the queue-feature tests (schedules, unique jobs, paused queues, cancelling running
jobs, results, progress): each file holds its feature's tests of every tier, fast ones first,
then real processes (workers, dispatchers, the local platform, a terminal)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from acceptance.conftest import RunningPlatform, start_platform
from click.testing import CliRunner, Result
from fake_heroku import FakeHeroku
from helpers import PgdynoProcess

from pgdyno.cli import main

__all__ = ["RunningPlatform", "start_platform"]


@pytest.fixture
def cli(database_url: str) -> Callable[..., Result]:
    """cli(*args) runs `pgdyno ARGS` in-process against the test database."""

    def invoke(*args: str, **env: str) -> Result:
        return CliRunner().invoke(main, list(args), env={"DATABASE_URL": database_url, **env})

    return invoke


@pytest.fixture
def heroku() -> Iterator[FakeHeroku]:
    with FakeHeroku(types={"winston": 0}) as server:
        yield server


@pytest.fixture
def dispatcher(database_url: str, heroku: FakeHeroku) -> Iterator[Callable[..., PgdynoProcess]]:
    """dispatcher(*rules, extra=(), **env) -> a `pgdyno dispatcher` process on the fake Heroku
    API, stopped after the test."""
    started: list[PgdynoProcess] = []

    def start(*rules: str, extra: tuple[str, ...] = (), **env: str) -> PgdynoProcess:
        args = ["dispatcher"]
        for rule in rules or ("reports=winston",):
            args += ["--scale", rule]
        started.append(
            PgdynoProcess(
                [*args, *extra],
                database_url,
                HEROKU_API_URL=heroku.url,
                HEROKU_APP_NAME=heroku.app,
                HEROKU_API_KEY=heroku.token,
                **env,
            )
        )
        return started[-1]

    yield start
    for proc in started:
        proc.close()


def patches(heroku: FakeHeroku) -> list[int]:
    """Quantities PATCHed to the fake Heroku API, in order."""
    return [r.body["quantity"] for r in heroku.requests if r.method == "PATCH"]


def count(conn: psycopg.Connection, query: Any, params: Any = None) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])
