"""Scaler's decisions on a real database, scaling an in-memory formation (MemoryFormation).

The connections stand for the processes: one per worker or dispatcher, as in production. The
race tests hold a decision at a chosen point with the Scaler's test signal (ScalerSignals), so
they prove an order instead of hoping for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from helpers import wait_until
from psycopg.rows import dict_row

from pgdyno.errors import FormationRejected, FormationUnavailable
from pgdyno.scaling.formation.memory import MemoryFormation
from pgdyno.scaling.policy import Rule, policies
from pgdyno.scaling.scaler import LOCKED_RETRY_S, Scaler, ScalerSignals
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
    decision = Scaler(backend, "dispatcher test").scale_up(conn, POLICY, "jobs enqueued").decision
    assert decision is not None and (decision.to_quantity, decision.ok) == (3, True)
    # Nothing recorded yet: the formation is read from the platform first.
    assert [call[0] for call in backend.calls] == ["get", "scale"]
    assert recorded(conn) == 3
    assert events(conn) == [(0, 3, "ok")]


def test_scale_up_leaves_a_formation_that_already_covers_the_load(conn):
    backend = MemoryFormation({"winston": 2})
    insert_jobs(conn, 3)
    scaler = Scaler(backend, "dispatcher test")
    assert scaler.scale_up(conn, POLICY, "jobs enqueued").decision is None
    assert scales(backend) == []
    assert recorded(conn) == 2


def test_scale_to_zero_refuses_while_a_job_is_ready_or_running(conn):
    backend = MemoryFormation({"winston": 1})
    scaler = Scaler(backend, "worker test")
    for status in ("running", "ready"):
        insert_jobs(conn, 1, status)
        assert scaler.scale_to_zero(conn, POLICY, idle_s=60).at_zero is False
        conn.execute("DELETE FROM pgdyno.jobs")
    assert scales(backend) == []


def test_scale_to_zero_of_a_drained_type_scales_it_down_and_records_why(conn):
    backend = MemoryFormation({"winston": 2})
    assert Scaler(backend, "worker test").scale_to_zero(conn, POLICY, idle_s=31.5).at_zero
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
        outcome = Scaler(backend, "worker test").scale_to_zero(conn, POLICY, idle_s=60)
        assert (outcome.at_zero, outcome.wait) == (False, "locked")
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
        target=lambda: results.update(
            down=worker.scale_to_zero(connect(), POLICY, idle_s=60).at_zero
        )
    )
    scale_down.start()
    assert paused.reached.wait(10)
    insert_jobs(conn, 1)  # committed after the worker's emptiness check

    dispatcher_conn = connect()
    dispatcher_pid = dispatcher_conn.info.backend_pid
    scale_up = threading.Thread(
        target=lambda: results.update(
            up=dispatcher.scale_up(dispatcher_conn, POLICY, "jobs enqueued").decision
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
    assert worker.scale_to_zero(conn, POLICY, idle_s=60).at_zero
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
    decision = Scaler(backend, "dispatcher test").scale_up(conn, POLICY, "timer").decision
    assert decision is not None and decision.from_quantity == 0
    assert [call[0] for call in backend.calls] == ["get", "scale"]


def test_api_failure_is_recorded_on_the_formation_and_as_the_event_outcome(conn):
    backend = MemoryFormation({})  # the platform does not know the type: 404
    conn.execute("UPDATE pgdyno.formations SET quantity = 0, known_at = now()")
    insert_jobs(conn, 1)
    decision = Scaler(backend, "dispatcher test").scale_up(conn, POLICY, "jobs enqueued").decision
    assert decision is not None and not decision.ok
    error = conn.execute("SELECT last_error FROM pgdyno.formations").fetchone()[0]
    assert error.startswith("404 not_found")
    assert events(conn)[0][2].startswith("error: 404 not_found")


# --- issue 12: scaling against real platform behaviour -----------------------------------------


def formation_row(conn: psycopg.Connection) -> dict:
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        "SELECT quantity, failures, not_before_cause,"
        " extract(epoch FROM not_before - now())::float8 AS not_before_in"
        " FROM pgdyno.formations WHERE process_type = 'winston'"
    ).fetchone()


def register_worker(
    conn: psycopg.Connection, queues: list[str], busy_ago: float | None = None, name: str = "w2"
) -> None:
    """A live worker of winston in the registry, last busy `busy_ago` seconds ago."""
    conn.execute(
        "INSERT INTO pgdyno.workers (id, process_type, queues, concurrency, busy_at)"
        " VALUES (%s, 'winston', %s, 1, now() - make_interval(secs => %s))",
        (name, queues, busy_ago),
    )


def test_retry_after_is_recorded_and_no_process_calls_the_api_for_the_type_before_it(conn):
    """Scenario 2: a 429's Retry-After held only the call that got it; every reconcile and
    worker re-check called again (17 requests in 40 s)."""
    backend = MemoryFormation({"winston": 0})
    backend.fail_next(FormationUnavailable("429 rate_limit", retry_after=60.0))
    insert_jobs(conn, 1)
    dispatcher = Scaler(backend, "dispatcher test")
    outcome = dispatcher.scale_up(conn, POLICY, "jobs enqueued")
    assert (outcome.wait, outcome.retry_in) == ("retry_after", 60.0)
    row = formation_row(conn)
    assert row["not_before_cause"] == "retry_after" and 55 < row["not_before_in"] <= 60
    calls = len(backend.calls)
    # The dispatcher again, another dispatcher, a worker: no call before the time.
    again = dispatcher.scale_up(conn, POLICY, "timer")
    assert again.wait == "retry_after" and 55 < again.retry_in <= 60
    assert Scaler(backend, "standby").scale_up(conn, POLICY, "startup", refresh=True).wait
    conn.execute("DELETE FROM pgdyno.jobs")
    down = Scaler(backend, "worker test").scale_to_zero(conn, POLICY, idle_s=60)
    assert (down.at_zero, down.wait) == (False, "retry_after")
    assert len(backend.calls) == calls


def test_an_ambiguous_failure_leaves_the_quantity_unknown_and_the_next_decision_reads_it(conn):
    """Scenario 4: a PATCH to 0 applied but answered 503 left 1 recorded, and the next job's
    scale-up was skipped as a no-op (the job waited 30 s)."""
    backend = MemoryFormation({"winston": 1})
    conn.execute("UPDATE pgdyno.formations SET quantity = 1, known_at = now()")
    backend.fail_next(FormationUnavailable("503 service_unavailable"), applied=True)
    down = Scaler(backend, "worker test").scale_to_zero(conn, POLICY, idle_s=60)
    assert not down.at_zero and down.wait == "backoff" and down.retry_in < 1
    assert backend.get("winston").quantity == 0  # the platform did apply it
    assert formation_row(conn)["quantity"] is None  # unknown, not 1
    conn.execute("UPDATE pgdyno.formations SET not_before = now()")  # the backoff has passed
    insert_jobs(conn, 1)
    backend.calls.clear()
    up = Scaler(backend, "dispatcher test").scale_up(conn, POLICY, "jobs enqueued")
    assert up.decision is not None and up.decision.ok
    assert [(call[0], call[2]) for call in backend.calls] == [("get", None), ("scale", 1)]


def test_a_decision_never_waits_for_a_lock_another_process_holds(conn, connect):
    """Scenario 5: the dispatcher's decision waited for a worker's, which slept on a 429
    with the row locked; now no decision waits, and none sleeps holding it."""
    backend = MemoryFormation({"winston": 0})
    insert_jobs(conn, 1)
    holder = connect()
    with holder.transaction():
        holder.execute("SELECT 1 FROM pgdyno.formations WHERE process_type = 'winston' FOR UPDATE")
        started = time.monotonic()
        outcome = Scaler(backend, "dispatcher test").scale_up(conn, POLICY, "x", wait=False)
        assert time.monotonic() - started < 1
    assert (outcome.wait, outcome.retry_in) == ("locked", LOCKED_RETRY_S)
    assert backend.calls == []


def test_drained_means_every_queue_the_types_workers_serve(conn):
    """Scenario 7: a worker serving reports and other scaled its type to zero (rule: reports)
    while an `other` job ran on its sibling; the job was handed back and stranded."""
    backend = MemoryFormation({"winston": 2})
    conn.execute("UPDATE pgdyno.formations SET quantity = 2, known_at = now()")
    register_worker(conn, ["reports", "other"], busy_ago=0)
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, attempts, worker, lease_expires_at)"
        " VALUES ('other', 't', 'running', 1, 'w2', now() + interval '1 day')"
    )
    outcome = Scaler(backend, "worker test").scale_to_zero(conn, POLICY, idle_s=60)
    assert (outcome.at_zero, outcome.wait) == (False, "busy: other")
    # The calling worker's own queues count even before it registered.
    conn.execute("DELETE FROM pgdyno.workers")
    served = Scaler(backend, "worker").scale_to_zero(conn, POLICY, idle_s=60, served=["other"])
    assert served.wait == "busy: other" and scales(backend) == []


LINGER = policies([Rule("reports", "winston", max_quantity=2, linger_s=8.0)])["winston"]


def test_linger_counts_from_the_last_busy_moment_of_the_type_not_of_the_caller(conn):
    """Scenario 1: the idle sibling compared its own 18 s with linger=8 and scaled the type
    to zero 3 s after the other dyno's last job."""
    backend = MemoryFormation({"winston": 2})
    conn.execute("UPDATE pgdyno.formations SET quantity = 2, known_at = now()")
    register_worker(conn, ["reports"], busy_ago=3.0)
    outcome = Scaler(backend, "worker test").scale_to_zero(conn, LINGER, idle_s=18)
    assert outcome.wait == "lingering" and 4.5 < outcome.retry_in <= 5.1
    # A job of the type's queues that finished 2 s ago counts too (exact, from finished_at).
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, finished_at)"
        " VALUES ('reports', 't', 'done', now() - interval '2 seconds')"
    )
    outcome = Scaler(backend, "worker test").scale_to_zero(conn, LINGER, idle_s=18)
    assert outcome.wait == "lingering" and 5.5 < outcome.retry_in <= 6.1
    conn.execute("UPDATE pgdyno.workers SET busy_at = now() - interval '20 seconds'")
    conn.execute("UPDATE pgdyno.jobs SET finished_at = now() - interval '9 seconds'")
    assert Scaler(backend, "worker test").scale_to_zero(conn, LINGER, idle_s=18).at_zero
    assert scales(backend) == [0]


def test_a_persistent_refusal_backs_off_instead_of_calling_and_recording_every_tick(conn):
    """Scenario 9: a standing 401 wrote a scale_events row every 5 s, forever."""
    backend = MemoryFormation({"winston": 0})
    backend.fail_next(FormationRejected(401, "unauthorized", "Invalid credentials provided."))
    conn.execute("UPDATE pgdyno.formations SET quantity = 0, known_at = now()")
    insert_jobs(conn, 1)
    scaler = Scaler(backend, "dispatcher test")
    first = scaler.scale_up(conn, POLICY, "jobs enqueued")
    assert first.decision is not None and not first.decision.ok
    assert first.wait == "backoff" and first.retry_in >= 5
    for _ in range(5):  # the dispatcher's ticks meanwhile
        assert scaler.scale_up(conn, POLICY, "timer").wait == "backoff"
    assert len(backend.calls) == 1 and len(events(conn)) == 1
    assert formation_row(conn)["failures"] == 1
