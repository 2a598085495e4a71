"""The example app (examples/heroku) runs from an installed wheel, as a user's app would.

The wheel is built from this checkout and installed, not editable, into a fresh virtualenv
(its dependencies from PyPI); `pgdyno dev` then runs the example's Procfile from the example's
folder with no checkout on sys.path, against an empty database: the release phase migrates it
from the SQL inside the wheel, a report enqueued with psql spins winston up from zero, runs,
and winston scales itself back to zero.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import REPO_DIR, wait_until
from psycopg.conninfo import make_conninfo

from pgdyno.platform.postgres import EmbeddedPostgres

EXAMPLE = REPO_DIR / "examples" / "heroku"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), "."],
        cwd=REPO_DIR,
        check=True,
    )
    (found,) = out.glob("pgdyno-*.whl")
    return found


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed (once per test session)."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run(
        [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
    )
    return path


def _env(venv: Path, **extra: str) -> dict[str, str]:
    """A user's shell: the venv's bin first on PATH, nothing of this checkout importable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PGDYNO_", "HEROKU_", "PYTHON", "VIRTUAL_ENV")) and k != "DYNO"
    }
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def test_the_wheel_ships_the_sql_the_demo_and_the_typing_marker(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "pgdyno/py.typed",
        "pgdyno/sql/queue.sql",
        "pgdyno/sql/admin.sql",
        "pgdyno/sql/migrations/0001_queue.sql",
        "pgdyno/demo/shop.sql",
        "pgdyno/demo/Procfile",
        "pgdyno/demo/reports/orders_export.sql",
    ):
        assert expected in names
    shipped = {n for n in names if n.startswith("pgdyno/sql/migrations/")}
    in_checkout = {
        f"pgdyno/sql/migrations/{p.name}"
        for p in (REPO_DIR / "pgdyno/sql/migrations").glob("*.sql")
    }
    assert shipped == in_checkout
    metadata = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/METADATA")
    text = metadata.decode()
    for field in ("License-Expression: MIT", "Project-URL: Source", "Classifier: Typing :: Typed"):
        assert field in text


@pytest.fixture
def empty_database(pg_admin_url: str) -> Iterator[str]:
    name = f"pgdyno_wheel_{os.getpid()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(pg_admin_url, dbname=name)
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_example_app_runs_from_the_installed_wheel(venv, empty_database, tmp_path):
    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app)
    assert "pgdyno" in (app / "requirements.txt").read_text()
    env = _env(venv, DATABASE_URL=empty_database, PGDYNO_LINGER="1s")

    # The pgdyno that runs is the installed one, not this checkout.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pgdyno; print(pgdyno.__file__)"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)) and "site-packages" in where, where

    log = (tmp_path / "dev.log").open("w+")
    dev = subprocess.Popen(
        [str(venv / "bin" / "pgdyno"), "dev"],
        cwd=app,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def output() -> str:
        return (tmp_path / "dev.log").read_text()

    try:
        wait_until(lambda: "event=dispatcher_leading" in output(), 60, message="julia to lead")
        assert "applied migrations: 1, 2, 3" in output()  # the release phase, from the wheel
        psql = EmbeddedPostgres.client_binary("psql")
        enqueued = time.time()
        inserted = subprocess.run(
            [
                psql,
                empty_database,
                "-qtAX",
                "-c",
                "INSERT INTO pgdyno.jobs (queue, task, args) VALUES "
                "('reports', 'report', '{\"name\": \"jobs_by_day\"}'), "
                "('reports', 'hello', '{\"name\": \"heroku\"}') RETURNING id",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        report_id, hello_id = (int(line) for line in inserted.stdout.split())
        with psycopg.connect(empty_database, autocommit=True) as conn:
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM pgdyno.jobs WHERE id IN (%s, %s) AND status = 'done'",
                        (report_id, hello_id),
                    ).fetchone()[0]
                    == 2
                ),
                timeout=90,
                message="the report and the task to be done\n" + output()[-3000:],
            )
            wait_until(
                lambda: "event=dyno_exited dyno=winston.1" in output(),
                timeout=60,
                message="winston to scale back to zero and exit",
            )
            events = conn.execute(
                "SELECT extract(epoch FROM at) - %s, from_quantity, to_quantity, actor, reason"
                " FROM pgdyno.scale_events WHERE process_type = 'winston' ORDER BY id",
                (enqueued,),
            ).fetchall()
            result = conn.execute(
                "SELECT result FROM pgdyno.jobs WHERE id = %s", (hello_id,)
            ).fetchone()[0]
        assert [(e[1], e[2]) for e in events] == [(0, 1), (1, 0)], events
        assert result == {"greeting": "hello, heroku"}  # tasks.py, imported from the app root
        for seconds, before, after, actor, reason in events:
            print(f"+{float(seconds):5.2f}s winston {before} -> {after} by {actor} ({reason})")

        # The installed CLI reads the app's reports/ folder and the stored result.
        show = subprocess.run(
            [str(venv / "bin" / "pgdyno"), "report", "show", str(report_id)],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "status:      done" in show and "stored:      postgres" in show, show
        listed = subprocess.run(
            [str(venv / "bin" / "pgdyno"), "report", "list"],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert listed.startswith("jobs_by_day(since date = 2026-01-01, queues text[] = null)")
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
        try:
            status = dev.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            raise
        log.close()
    assert status == 0, output()[-3000:]
    assert "Traceback" not in output()
