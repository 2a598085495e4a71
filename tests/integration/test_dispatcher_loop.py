"""The dispatcher's debounce and leadership, step by step on a fake clock, with a real database
(LISTEN/NOTIFY and the leader lock are Postgres's) and an in-memory formation.

A test inserts jobs, waits until their notification has reached the dispatcher's socket, then
runs one `_lead_step`; a step that finds nothing to do waits, and the fake clock jumps to the
wait's deadline. `clock.waits` is the dispatcher's schedule.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fakes import FakeClock
from helpers import wait_until

from pgdyno.clock import wait_readable
from pgdyno.config import Settings
from pgdyno.errors import FormationUnavailable
from pgdyno.scaling.dispatcher import Dispatcher, Leading
from pgdyno.scaling.formation.memory import MemoryFormation
from pgdyno.scaling.policy import Rule
from pgdyno.scaling.scaler import LOCKED_RETRY_S

RULES = [Rule("reports", "winston", max_quantity=3)]


class Driven:
    """A Dispatcher with its connection, driven one step at a time."""

    def __init__(self, dispatcher: Dispatcher, backend: MemoryFormation) -> None:
        self.dispatcher, self.backend = dispatcher, backend
        self.conn = dispatcher._connect()
        self.leading: Leading | None = None

    def lead(self) -> None:
        assert self.dispatcher._try_lead(self.conn)
        self.leading = self.dispatcher._start_leading(self.conn)

    def step(self) -> None:
        assert self.leading is not None
        self.dispatcher._lead_step(self.conn, self.leading)

    def step_until(self, done: Callable[[], bool], limit: int = 100) -> None:
        for _ in range(limit):
            if done():
                return
            self.step()
        raise AssertionError(f"not done after {limit} steps")

    def notified(self) -> None:
        """Wait (real time) until a notification has reached the dispatcher's connection."""
        assert wait_readable([self.conn.pgconn.socket], 10), "no notification arrived"

    def scales(self) -> list[int | None]:
        return [quantity for call, _, quantity, _ in self.backend.calls if call == "scale"]


@pytest.fixture
def dispatcher(database_url: str, clock: FakeClock) -> Iterator[Callable[..., Driven]]:
    made: list[Driven] = []

    def make(rules: list[Rule] = RULES, **settings: object) -> Driven:
        config = Settings(
            database_url=database_url,
            dyno="julia.1",
            **{"debounce": 0.5, "reconcile_interval": 5.0, **settings},  # type: ignore[arg-type]
        )
        backend = MemoryFormation(dict.fromkeys({rule.process_type for rule in rules}, 0))
        made.append(Driven(Dispatcher(config, rules, backend, clock=clock), backend))
        return made[-1]

    yield make
    for driven in made:
        driven.conn.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def insert(conn: psycopg.Connection, count: int = 1, queue: str = "reports") -> None:
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task) SELECT %s, 't' FROM generate_series(1, %s)",
        (queue, count),
    )


def decisions(caplog: pytest.LogCaptureFixture, trigger: str) -> int:
    return sum(1 for r in caplog.records if r.msg == "reconcile" and r.logfmt["trigger"] == trigger)


def test_first_notification_is_acted_on_at_once_and_a_burst_within_the_debounce_once_more(
    dispatcher, conn, clock, caplog
):
    driven = dispatcher()
    with caplog.at_level(logging.DEBUG, "pgdyno"):
        driven.lead()
        assert decisions(caplog, "startup") == 1

        insert(conn)
        driven.notified()
        driven.step()
        assert driven.scales() == [1] and clock.elapsed() == 0  # at once

        for _ in range(20):  # a burst: 20 transactions
            insert(conn)
        # Within the debounce period the dispatcher does not wait on the queue (migration
        # 0011): the burst sends no notification, and the period's end decides once.
        assert not wait_readable([driven.conn.pgconn.socket], 0.2)
        driven.step_until(lambda: driven.scales() != [1])
        assert driven.scales() == [1, 3] and clock.elapsed() == 0.5
        assert clock.waits == [0.5]
    assert decisions(caplog, "jobs enqueued") == 2


def test_timer_reconciles_and_does_not_start_a_debounce_period(dispatcher, conn, clock, caplog):
    driven = dispatcher()
    with caplog.at_level(logging.DEBUG, "pgdyno"):
        driven.lead()
        driven.step()  # nothing notified: sleep until the safety net
        driven.step()
        assert clock.waits == [5.0] and decisions(caplog, "timer") == 1
        # A job whose notification was lost is found by the timer.
        conn.execute("SET pgdyno.skip_notify = on")
        insert(conn)
        conn.execute("RESET pgdyno.skip_notify")
        driven.step()
        driven.step()
        assert driven.scales() == [1] and decisions(caplog, "timer") == 2
        insert(conn, 2)
        driven.notified()
        driven.step()  # right after the timer's decision: at once
    assert driven.scales() == [1, 3] and clock.elapsed() == 10.0


def test_standby_takes_over_when_the_leader_session_ends(dispatcher, caplog, clock, conn):
    leader, standby = dispatcher(), dispatcher()
    leader.lead()

    def leader_dies(_timeout: float | None) -> None:
        leader.conn.close()
        wait_until(
            lambda: (
                not conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                ).fetchone()[0]
            ),
            message="the leader's lock to be released",
        )

    clock.on_wait = leader_dies
    with caplog.at_level(logging.INFO, "pgdyno"):
        assert standby.dispatcher._wait_for_leadership(standby.conn) is True
    assert clock.waits == [1.0]  # one standby retry
    assert [r.msg for r in caplog.records] == ["dispatcher_standby", "dispatcher_leading"]


def test_stopped_standby_stops_waiting_for_the_lock(dispatcher, clock):
    leader, standby = dispatcher(), dispatcher()
    leader.lead()
    clock.on_wait = lambda _timeout: standby.dispatcher.stop()
    assert standby.dispatcher._wait_for_leadership(standby.conn) is False


def test_stop_ends_a_leading_dispatcher_at_once_whatever_its_reconcile_interval(database_url):
    """SIGTERM (stop) used to wait for the next reconcile tick: up to an hour here."""
    settings = Settings(database_url=database_url, reconcile_interval=3600.0)
    runner = Dispatcher(settings, RULES, MemoryFormation({"winston": 0}))
    exit_codes: list[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(runner.run()))
    thread.start()
    with psycopg.connect(database_url, autocommit=True) as conn:
        wait_until(
            lambda: conn.execute("SELECT count(*) FROM pgdyno.scale_rules").fetchone()[0],
            message="the dispatcher to lead",
        )
    runner.stop()
    thread.join(10)
    assert exit_codes == [0]


# --- issue 12 ------------------------------------------------------------------------------------

TWO_TYPES = [Rule("reports", "winston"), Rule("mail", "ellie")]


def test_a_type_whose_row_is_locked_never_delays_another_and_is_decided_once_free(
    dispatcher, conn, clock
):
    """Scenario 5: a job for ellie waited 35 s while a worker's scale-down of winston held
    winston's row (retrying a 429): the dispatcher waited for that lock first."""
    driven = dispatcher(rules=TWO_TYPES)
    driven.lead()
    holder = psycopg.connect(conn.info.dsn, autocommit=True)
    try:
        with holder.transaction():  # a worker deciding for winston, its API call slow
            holder.execute(
                "SELECT 1 FROM pgdyno.formations WHERE process_type = 'winston' FOR UPDATE"
            )
            insert(conn, queue="reports")
            insert(conn, queue="mail")
            driven.notified()
            driven.step()
            assert [c[1:3] for c in driven.backend.calls if c[0] == "scale"] == [("ellie", 1)]
            assert clock.elapsed() == 0
            driven.step()  # nothing else to do: waits for winston's retry, a moment
            assert clock.waits[-1] <= LOCKED_RETRY_S
        driven.step_until(lambda: len(driven.scales()) == 2)
    finally:
        holder.close()
    assert [c[1:3] for c in driven.backend.calls if c[0] == "scale"] == [
        ("ellie", 1),
        ("winston", 1),
    ]


def test_retry_after_holds_the_dispatchers_calls_across_its_ticks(dispatcher, conn, clock):
    """Scenario 2: once told to wait, the dispatcher called again on every 5 s tick."""
    driven = dispatcher(reconcile_interval=1.0)
    driven.lead()
    driven.backend.fail_next(FormationUnavailable("429 rate_limit", retry_after=60.0))
    insert(conn)
    driven.notified()
    driven.step()
    calls = len(driven.backend.calls)
    # Five timer ticks (fake seconds): the Retry-After is in real time.
    driven.step_until(lambda: clock.elapsed() >= 5)
    assert len(driven.backend.calls) == calls


def test_rule_queues_no_worker_of_the_type_serves_are_warned_about(dispatcher, conn, caplog):
    """Scenario 6: rule mail=winston, winston's workers serve only reports: winston stayed
    up for good, with no warning."""
    driven = dispatcher(rules=[Rule("reports", "winston"), Rule("mail", "winston")])
    conn.execute(
        "INSERT INTO pgdyno.workers (id, process_type, queues, concurrency)"
        " VALUES ('winston.1:1:ab', 'winston', '{reports}', 1)"
    )
    with caplog.at_level(logging.INFO, "pgdyno"):
        driven.lead()
        driven.step()
        driven.step()  # the timer's check
        driven.step()
        driven.step()  # again: not repeated while it stands
    warnings = [r.logfmt for r in caplog.records if r.msg == "rule_queues_unserved"]
    assert len(warnings) == 1
    assert (warnings[0]["type"], warnings[0]["queues"], warnings[0]["served"]) == (
        "winston",
        "mail",
        "reports",
    )


def test_dispatcher_waits_on_its_rule_queues_except_right_after_a_notified_decision(
    dispatcher, conn, clock
):
    """Issue 15: enqueuers notify a queue only while a session waits on it. The dispatcher
    waits on its rule queues, so the first job of a type at zero wakes it; for the debounce
    period after a notified decision it does not (a stream of enqueues would notify for
    nothing), and the decision at the period's end waits on them again first."""

    def sleeping() -> list[tuple[str, bool]]:
        return conn.execute(
            "SELECT queue, sleeping FROM pgdyno.sleepers WHERE holder LIKE 'dispatcher %'"
        ).fetchall()

    driven = dispatcher(rules=[Rule("reports", "winston", max_quantity=3), Rule("mail", "ellie")])
    driven.lead()
    assert sorted(sleeping()) == [("mail", True), ("reports", True)]
    insert(conn)
    driven.notified()
    driven.step()
    assert driven.scales() == [1]
    assert sorted(sleeping()) == [("mail", False), ("reports", False)]
    insert(conn, 2)
    driven.step_until(lambda: driven.scales() != [1])  # the period's end: waits, then decides
    assert driven.scales() == [1, 3] and clock.elapsed() == 0.5
    assert sorted(sleeping()) == [("mail", True), ("reports", True)]
    insert(conn, queue="mail")  # much later: notified, decided at once
    driven.notified()
    driven.step()
    assert [c[1:3] for c in driven.backend.calls if c[0] == "scale"][-1] == ("ellie", 1)
