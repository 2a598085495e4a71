"""The dispatcher as a process: Postgres restarts, standby takeover, notification bursts,
API failures reported in `pgdyno status`."""

from __future__ import annotations

import json
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fake_heroku import FakeHeroku
from helpers import PgdynoProcess, wait_until

from pgdyno.migrate import migrate
from pgdyno.platform.postgres import EmbeddedPostgres


@pytest.fixture
def heroku() -> Iterator[FakeHeroku]:
    with FakeHeroku(types={"winston": 0}) as server:
        yield server


def dispatcher(
    database_url: str, heroku: FakeHeroku, *rules: str, token: str | None = None, **env: str
) -> PgdynoProcess:
    args = ["dispatcher"]
    for rule in rules or ("reports=winston,max=2",):
        args += ["--scale", rule]
    return PgdynoProcess(
        args,
        database_url,
        HEROKU_API_URL=heroku.url,
        HEROKU_APP_NAME=heroku.app,
        HEROKU_API_KEY=token or heroku.token,
        **env,
    )


def patches(heroku: FakeHeroku) -> list[int]:
    return [r.body["quantity"] for r in heroku.requests if r.method == "PATCH"]


def test_dispatcher_survives_a_postgres_restart_and_catches_up(heroku):
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="pgdyno-restart-")) / "pg")
    try:
        url = server.start()
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        with dispatcher(url, heroku, PGDYNO_RECONCILE_INTERVAL="1h") as proc:
            proc.wait_for_output("dispatcher_leading")
            # A job whose notification is lost (as if sent while the dispatcher reconnects).
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET pgdyno.skip_notify = on")
                conn.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('reports', 'x')")
            server.restart()
            wait_until(
                lambda: proc.output().count("dispatcher_leading") == 2,
                timeout=30,
                message="the dispatcher to reconnect and lead again",
            )
            wait_until(lambda: patches(heroku) == [1], message="the catch-up reconcile")
            # LISTEN works again: a notified job raises the formation without any timer.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('reports', 'y')")
            wait_until(lambda: patches(heroku) == [1, 2], message="a notified scale-up")
            assert "db_unavailable" in proc.output() or "db_connection_lost" in proc.output()
    finally:
        server.destroy()


def test_standby_dispatcher_takes_over_when_the_leader_is_killed(database_url, heroku, conn):
    with dispatcher(database_url, heroku) as first:
        first.wait_for_output("dispatcher_leading")
        with dispatcher(database_url, heroku) as second:
            second.wait_for_output("dispatcher_standby")
            assert "dispatcher_leading" not in second.output()
            first.kill()
            second.wait_for_output("dispatcher_leading", timeout=15)
            conn.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('reports', 'x')")
            wait_until(lambda: patches(heroku) == [1], message="the new leader to scale up")


def test_a_burst_of_10000_inserts_makes_a_few_decisions_and_one_patch(database_url, heroku, conn):
    with dispatcher(
        database_url,
        heroku,
        "reports=winston,max=3",
        PGDYNO_LOG_LEVEL="DEBUG",
        PGDYNO_RECONCILE_INTERVAL="1h",
        PGDYNO_DEBOUNCE="1s",
    ) as proc:
        # The startup reconcile must be over first, or it could make the PATCH itself.
        proc.wait_for_output("trigger=startup")
        with conn.pipeline():
            for _ in range(10_000):  # 10,000 transactions, 10,000 notifications
                conn.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('reports', 'x')")
        wait_until(lambda: patches(heroku) == [3], message="the scale-up")
        # The decision's log line follows its PATCH: wait for it, not for the PATCH alone.
        wait_until(
            lambda: 'trigger="jobs enqueued"' in proc.output(), message="the decision's log line"
        )
        decisions = proc.output().count('trigger="jobs enqueued"')
        assert 1 <= decisions <= 10, decisions
        assert patches(heroku) == [3]


def test_rejected_api_call_keeps_the_dispatcher_running_and_shows_in_status(
    database_url, heroku, conn
):
    with dispatcher(database_url, heroku, token="wrong-token") as proc:
        proc.wait_for_output("dispatcher_leading")
        conn.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('reports', 'x')")
        proc.wait_for_output("401 unauthorized")
        status = PgdynoProcess(["status", "--json"], database_url)
        assert status.wait() == 0
        scaling = json.loads(status.output()[status.output().index("{") :])["scaling"]
        assert "401 unauthorized" in scaling["winston"]["last_error"]
        assert "HEROKU_API_KEY" in scaling["winston"]["last_error"]
        # The first call (reading the unknown formation) was refused: no PATCH, so no event.
        assert scaling["winston"]["failures"] == 1
        assert heroku.token not in proc.output() and "wrong-token" not in proc.output()
        assert proc.proc.poll() is None  # still running
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


def test_dispatcher_rereads_the_formation_when_it_takes_over(database_url, heroku, conn):
    # Recorded state says winston runs, but the platform has it at zero (a restart, a manual
    # `heroku ps:scale winston=0`): a new leader must not trust the record and skip the PATCH.
    conn.execute(
        "INSERT INTO pgdyno.formations (process_type, quantity, known_at) "
        "VALUES ('winston', 1, now())"
    )
    conn.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('reports', 'x')")
    with dispatcher(database_url, heroku, PGDYNO_RECONCILE_INTERVAL="1h") as proc:
        proc.wait_for_output("dispatcher_leading")
        wait_until(lambda: patches(heroku) == [1], message="the scale-up from the real zero")
    assert [r.method for r in heroku.requests] == ["GET", "PATCH"]
