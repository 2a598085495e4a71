"""End to end on the local platform: jobs spin winston up from zero and back down."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import job_row, psql_binary, wait_until

pytestmark = pytest.mark.usefixtures("effects")

PROCFILE = """\
julia: {pgdyno} dispatcher --scale reports=winston,linger=0
winston: {pgdyno} worker --queue reports --import sample_tasks
"""


def job_status(conn, job_id: int) -> str:
    return job_row(conn, job_id)["status"]


def scale_events(conn, process_type: str = "winston") -> list[tuple]:
    return conn.execute(
        "SELECT from_quantity, to_quantity, outcome, actor FROM pgdyno.scale_events"
        " WHERE process_type = %s ORDER BY id",
        (process_type,),
    ).fetchall()


def psql_insert(database_url: str, sql: str) -> int:
    psql = psql_binary()
    out = subprocess.run(
        [psql, database_url, "-qtAX", "-c", sql], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[0])


def leading(conn) -> bool:
    return conn.execute("SELECT count(*) FROM pgdyno.scale_rules").fetchone()[0] > 0


def test_job_inserted_by_psql_spins_winston_up_and_back_to_zero(start_platform, conn, database_url):
    platform = start_platform(PROCFILE)
    wait_until(lambda: leading(conn), message="the dispatcher to record its rules")
    assert platform.quantity("winston") == 0 and platform.alive("winston") == []

    job_id = psql_insert(
        database_url,
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES "
        "('reports', 'record', '{\"key\": \"psql\"}') RETURNING id",
    )

    wait_until(lambda: platform.alive("winston"), message="winston to start")
    wait_until(lambda: job_status(conn, job_id) == "done", timeout=30, message="the job to run")
    wait_until(
        lambda: platform.quantity("winston") == 0 and not platform.alive("winston"),
        timeout=30,
        message="winston to scale back to zero and exit",
    )

    events = scale_events(conn)
    assert [(e[0], e[1], e[2]) for e in events] == [(0, 1, "ok"), (1, 0, "ok")]
    assert events[0][3].startswith("dispatcher julia.1")
    assert events[1][3].startswith("worker winston.1")
    assert platform.scale_patches("winston") == [1, 0]
    formation = conn.execute(
        "SELECT quantity FROM pgdyno.formations WHERE process_type = 'winston'"
    ).fetchone()[0]
    assert formation == platform.quantity("winston") == 0


def test_job_committed_during_scale_down_still_runs_without_a_timer(
    start_platform, conn, tmp_path: Path
):
    pause = tmp_path / "pause"
    platform = start_platform(
        PROCFILE.replace(
            "--import sample_tasks", "--import sample_tasks --import scale_down_pause"
        ),
        TEST_PAUSE_BEFORE_SCALE_DOWN=str(pause),
        PGDYNO_RECONCILE_INTERVAL="1h",
        PGDYNO_POLL_INTERVAL="1h",
    )
    wait_until(lambda: leading(conn), message="the dispatcher to record its rules")
    first = conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES "
        "('reports', 'record', '{\"key\": \"first\"}') RETURNING id"
    ).fetchone()[0]
    wait_until(lambda: job_status(conn, first) == "done", timeout=30, message="the first job")

    # The worker found the queue empty and holds the type's lock, paused before its PATCH.
    wait_until(
        lambda: Path(f"{pause}.paused").exists(),
        timeout=30,
        message="the worker to pause between its emptiness check and its PATCH",
    )
    second = conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES "
        "('reports', 'record', '{\"key\": \"second\"}') RETURNING id"
    ).fetchone()[0]
    Path(f"{pause}.resume").touch()

    wait_until(
        lambda: job_status(conn, second) == "done",
        timeout=30,
        message="the job committed during the scale-down to run",
    )
    wait_until(
        lambda: len(scale_events(conn)) >= 4 and not platform.alive("winston"),
        timeout=30,
        message="winston back at zero after the second job",
    )
    transitions = [(e[0], e[1]) for e in scale_events(conn)]
    assert transitions == [(0, 1), (1, 0), (0, 1), (1, 0)]
    assert platform.quantity("winston") == 0


def test_several_dynos_never_scale_below_the_busy_ones(start_platform, conn):
    platform = start_platform(
        "julia: {pgdyno} dispatcher --scale reports=winston,max=3,linger=0\n"
        "winston: {pgdyno} worker --queue reports --import sample_tasks\n"
    )
    wait_until(lambda: leading(conn), message="the dispatcher to record its rules")
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) SELECT 'reports', 'record', "
        "jsonb_build_object('key', 'job' || i, 'sleep', 0.3) FROM generate_series(1, 30) i"
    )
    wait_until(
        lambda: len(platform.alive("winston")) == 3, timeout=30, message="three winston dynos"
    )
    wait_until(
        lambda: (
            conn.execute("SELECT count(*) FROM pgdyno.jobs WHERE status = 'done'").fetchone()[0]
            == 30
        ),
        timeout=60,
        message="all 30 jobs done",
    )
    wait_until(
        lambda: platform.quantity("winston") == 0 and not platform.alive("winston"),
        timeout=30,
        message="winston back to zero",
    )

    assert [(e[0], e[1]) for e in scale_events(conn)] == [(0, 3), (3, 0)]
    assert platform.scale_patches("winston") == [3, 0]
    last_done, scaled_to_zero = conn.execute(
        "SELECT (SELECT max(finished_at) FROM pgdyno.jobs),"
        " (SELECT at FROM pgdyno.scale_events WHERE to_quantity = 0)"
    ).fetchone()
    assert scaled_to_zero >= last_done
    runs = conn.execute(
        "SELECT job_key, count(*) FROM test_effects WHERE kind = 'start' GROUP BY job_key"
    ).fetchall()
    assert len(runs) == 30 and all(count == 1 for _, count in runs)
