"""`pgdyno dev` as a user runs it: the embedded Postgres it starts, the DATABASE_URL line to
paste into another shell, Ctrl-C that stops everything (the embedded Postgres too), and a
second Ctrl-C that kills a dyno still in its grace period at once."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import psycopg
import pytest
from helpers import PgdynoProcess, wait_for_status, wait_until

from pgdyno.platform.postgres import EmbeddedPostgres

PROCFILE = """\
julia: pgdyno dispatcher --scale q=winston
winston: pgdyno worker --queue q --import sample_tasks --grace 60s
"""


EFFECTS = (  # where the sample tasks record what they did (as the `effects` fixture makes it)
    "CREATE TABLE IF NOT EXISTS test_effects (id bigserial PRIMARY KEY, kind text NOT NULL,"
    " job_key text NOT NULL, pid int NOT NULL, extra jsonb,"
    " at timestamptz NOT NULL DEFAULT clock_timestamp())"
)


def _url(proc: PgdynoProcess) -> str:
    text = proc.wait_for_output("export DATABASE_URL=", timeout=120)
    match = re.search(r"\|   export DATABASE_URL=(\S+)\n", text)
    assert match, text
    return match.group(1)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "Procfile").write_text(PROCFILE)
    return tmp_path


def _dev(app: Path) -> PgdynoProcess:
    # DATABASE_URL empty: pgdyno dev starts the embedded Postgres beside the Procfile.
    return PgdynoProcess(
        ["dev", "--procfile", str(app / "Procfile"), "--kill-timeout", "60s"],
        "",
        PGDYNO_LINGER="60s",
    )


def test_ctrl_c_stops_everything_and_a_second_one_kills_at_once(app):
    server = EmbeddedPostgres(app / ".pgdyno" / "postgres")
    try:
        with _dev(app) as dev:
            url = _url(dev)
            assert url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
            with psycopg.connect(url, autocommit=True) as conn:  # the pasted URL works
                conn.execute(EFFECTS)
                job_id = conn.execute(
                    "INSERT INTO pgdyno.jobs (queue, task, args) VALUES "
                    "('q', 'record', '{\"key\": \"slow\", \"sleep\": 120}') RETURNING id"
                ).fetchone()[0]
                wait_for_status(conn, job_id, "running", timeout=60)
            dev.signal(signal.SIGINT)
            dev.wait_for_output("event=shutdown_requested signal=SIGINT")
            dev.wait_for_output("event=dyno_stopping dyno=winston.1")
            assert dev.proc.poll() is None  # the worker's 60 s grace period has begun
            started = time.monotonic()
            dev.signal(signal.SIGINT)
            assert dev.wait(timeout=20) == 0
            assert time.monotonic() - started < 20  # not the grace period nor the kill timeout
            output = dev.output()
            assert "event=kill_requested signal=SIGINT" in output
            assert "event=dyno_killed dyno=winston.1 signal=SIGKILL" in output
            assert "embedded Postgres stopped" in output
            assert not server.is_running()

        with _dev(app) as dev:  # the same data again; nothing running: one Ctrl-C is enough
            assert _url(dev) == url
            # The job killed above keeps its lease for 30 s after its last renewal; a start
            # slower than that (a loaded machine) would rescue and run it, and its grace period
            # would begin. It goes before the dynos start, so that nothing runs.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DELETE FROM pgdyno.jobs WHERE id = %s", (job_id,))
            dev.wait_for_output("event=dispatcher_leading")
            dev.signal(signal.SIGINT)
            assert dev.wait(timeout=30) == 0
            output = dev.output()
            assert "event=dyno_exited dyno=julia.1" in output
            assert "event=kill_requested" not in output
            assert not server.is_running()
            wait_until(lambda: not (server.pgdata / "postmaster.pid").exists(), timeout=5)
    finally:
        server.destroy()
