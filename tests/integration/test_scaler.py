"""Scaler's decisions on a real database, scaling an in-memory formation (MemoryFormation).

The connections stand for the processes: one per worker or dispatcher, as in production. The
race tests hold a decision at a chosen point with the Scaler's test signal (ScalerSignals), so
they prove an order instead of hoping for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from helpers import wait_until

from pgdyno.scaling.formation.memory import MemoryFormation
from pgdyno.scaling.policy import Rule, policies
from pgdyno.scaling.scaler import Scaler, ScalerSignals
from pgdyno.scaling.state import record_rules

POLICY = policies([Rule("reports", "winston", max_quantity=3, jobs_per_dyno=2)])["winston"]


@pytest.fixture
def connect(database_url: str) -> Iterator:
    """connect() -> a new autocommit connection (a process of its own), closed afterwards."""
    opened: list[psycopg.Connection] = []

    def make() -> psycopg.Connection:
        opened.append(psycopg.connect(database_url, autocommit=True))
        return opened[-1]

    yield make
    for conn in opened:
        conn.close()


def insert_jobs(conn: psycopg.Connection, count: int = 1, status: str = "ready") -> None:
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, attempts, worker, lease_expires_at)"
        " SELECT 'reports', 't', %s::pgdyno.job_status, %s, %s, %s"
        " FROM generate_series(1, %s)",
        (
            status,
            1 if status == "running" else 0,
            "w" if status == "running" else None,
            "2100-01-01 00:00:00+00" if status == "running" else None,  # never expires here
            count,
        ),
    )


def recorded(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        "SELECT quantity FROM pgdyno.formations WHERE process_type = 'winston'"
    ).fetchone()
    return None if row is None else row[0]


def events(conn: psycopg.Connection) -> list[tuple[int | None, int, str]]:
    return conn.execute(
        "SELECT from_quantity, to_quantity, outcome FROM pgdyno.scale_events ORDER BY id"
    ).fetchall()


def scales(backend: MemoryFormation) -> list[int | None]:
    return [quantity for call, _, quantity, _ in backend.calls if call == "scale"]


@pytest.fixture
def conn(conn: psycopg.Connection) -> psycopg.Connection:
    record_rules(conn, [Rule("reports", "winston", max_quantity=3, jobs_per_dyno=2)])
    return conn


def test_scale_up_sets_what_the_load_justifies_and_records_it(conn):
    backend = MemoryFormation({"winston": 0})
    insert_jobs(conn, 5)
    decision = Scaler(backend, "dispatcher test").scale_up(conn, POLICY, "jobs enqueued")
    assert decision is not None and (decision.to_quantity, decision.ok) == (3, True)
    # Nothing recorded yet: the formation is read from the platform first.
    assert [call[0] for call in backend.calls] == ["get", "scale"]
    assert recorded(conn) == 3
    assert events(conn) == [(0, 3, "ok")]


def test_scale_up_leaves_a_formation_that_already_covers_the_load(conn):
    backend = MemoryFormation({"winston": 2})
    insert_jobs(conn, 3)
    scaler = Scaler(backend, "dispatcher test")
    assert scaler.scale_up(conn, POLICY, "jobs enqueued") is None
    assert scales(backend) == []
    assert recorded(conn) == 2


def test_scale_to_zero_refuses_while_a_job_is_ready_or_running(conn):
    backend = MemoryFormation({"winston": 1})
    scaler = Scaler(backend, "worker test")
    for status in ("running", "ready"):
        insert_jobs(conn, 1, status)
        assert scaler.scale_to_zero(conn, POLICY, idle_s=60) is False
        conn.execute("DELETE FROM pgdyno.jobs")
    assert scales(backend) == []


def test_scale_to_zero_of_a_drained_type_scales_it_down_and_records_why(conn):
    backend = MemoryFormation({"winston": 2})
    assert Scaler(backend, "worker test").scale_to_zero(conn, POLICY, idle_s=31.5) is True
    assert scales(backend) == [0]
    assert recorded(conn) == 0
    reason = conn.execute("SELECT reason FROM pgdyno.scale_events").fetchone()[0]
    assert reason == "queues drained (reports), idle 31.5s"


def test_worker_never_waits_for_a_dispatcher_that_is_deciding(conn, connect):
    backend = MemoryFormation({"winston": 1})
    dispatcher = connect()
    with dispatcher.transaction():  # a dispatcher's decision holds the type's row
        dispatcher.execute(
            "SELECT 1 FROM pgdyno.formations WHERE process_type = 'winston' FOR UPDATE"
        )
        assert Scaler(backend, "worker test").scale_to_zero(conn, POLICY, idle_s=60) is False
    assert scales(backend) == []


class Paused:
    """A ScalerSignals.before_scale_down that holds the worker's decision until released."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, process_type: str) -> None:
        self.reached.set()
        assert self.release.wait(10), "the test never released the scale-down"


def test_job_committed_during_scale_down_is_not_stranded_the_dispatcher_waits_then_scales_up(
    conn, connect
):
    """The invariant of scaler.py: the worker checked the queues and holds the lock; a job is
    committed; the dispatcher's decision waits for the worker's, then sees the job and 0."""
    backend = MemoryFormation({"winston": 1})
    conn.execute("UPDATE pgdyno.formations SET quantity = 1, known_at = now()")
    paused = Paused()
    worker = Scaler(backend, "worker test", signals=ScalerSignals(before_scale_down=paused))
    dispatcher = Scaler(backend, "dispatcher test")
    results: dict[str, object] = {}

    scale_down = threading.Thread(
        target=lambda: results.update(down=worker.scale_to_zero(connect(), POLICY, idle_s=60))
    )
    scale_down.start()
    assert paused.reached.wait(10)
    insert_jobs(conn, 1)  # committed after the worker's emptiness check

    dispatcher_conn = connect()
    dispatcher_pid = dispatcher_conn.info.backend_pid
    scale_up = threading.Thread(
        target=lambda: results.update(
            up=dispatcher.scale_up(dispatcher_conn, POLICY, "jobs enqueued")
        )
    )
    scale_up.start()
    wait_until(
        lambda: conn.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
            (dispatcher_pid,),
        ).fetchone()[0],
        message="the dispatcher's decision to wait for the worker's lock",
    )
    paused.release.set()
    scale_down.join(10)
    scale_up.join(10)

    assert results["down"] is True
    assert scales(backend) == [0, 1]  # down, then up: the job gets a dyno
    assert recorded(conn) == 1 and backend.get("winston").quantity == 1
    assert [(e[0], e[1]) for e in events(conn)] == [(1, 0), (0, 1)]


def test_job_committed_during_scale_down_without_a_dispatcher_is_caught_by_the_recheck(
    conn, connect
):
    backend = MemoryFormation({"winston": 1})
    conn.execute("UPDATE pgdyno.formations SET quantity = 1, known_at = now()")
    signals = ScalerSignals(before_scale_down=lambda _type: insert_jobs(connect(), 1))
    worker = Scaler(backend, "worker test", signals=signals)
    assert worker.scale_to_zero(conn, POLICY, idle_s=60) is True
    assert scales(backend) == [0, 1]
    reasons = [row[0] for row in conn.execute("SELECT reason FROM pgdyno.scale_events ORDER BY id")]
    assert reasons[1].startswith("job arrived during scale-down")


def test_formation_doubted_by_long_waiting_jobs_is_read_again_from_the_platform(conn):
    # Recorded as 1 long ago, jobs waiting long: someone may have scaled it by hand.
    conn.execute(
        "UPDATE pgdyno.formations SET quantity = 1, known_at = now() - interval '1 minute'"
    )
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, run_at)"
        " VALUES ('reports', 't', now() - interval '1 minute')"
    )
    backend = MemoryFormation({"winston": 0})
    decision = Scaler(backend, "dispatcher test").scale_up(conn, POLICY, "timer")
    assert decision is not None and decision.from_quantity == 0
    assert [call[0] for call in backend.calls] == ["get", "scale"]


def test_api_failure_is_recorded_on_the_formation_and_as_the_event_outcome(conn):
    backend = MemoryFormation({})  # the platform does not know the type: 404
    conn.execute("UPDATE pgdyno.formations SET quantity = 0, known_at = now()")
    insert_jobs(conn, 1)
    decision = Scaler(backend, "dispatcher test").scale_up(conn, POLICY, "jobs enqueued")
    assert decision is not None and not decision.ok
    error = conn.execute("SELECT last_error FROM pgdyno.formations").fetchone()[0]
    assert error.startswith("404 not_found")
    assert events(conn)[0][2].startswith("error: 404 not_found")
