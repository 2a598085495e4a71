"""NOTIFY payloads as hints (worker/hints.py): a flood of notifications costs a worker at most
one read and one claim per quiet period, and a notification that finds work is claimed at once.
On the fake clock of tests/fakes.py; the CPU an idle worker spends under a real flood is
measured by `python -m bench.notify_flood`."""

from __future__ import annotations

import contextlib
import os

from fakes import FakeSession

from pgdyno.worker.hints import QUIET_S, NotifyHints


class SocketSession(FakeSession):
    """A session whose notifications make its socket readable, as a LISTEN connection's do:
    a loop that waits on it wakes at once (the fake clock does not move)."""

    def __init__(self) -> None:
        super().__init__()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def notify(self, *queues: str) -> None:
        super().notify(*queues)
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"n")

    def notifications(self) -> list[str]:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass
        return super().notifications()

    def fds(self) -> list[int]:
        return [self._read]

    def close(self) -> None:
        super().close()
        os.close(self._read)
        os.close(self._write)


def _flooded(loop, payload: str):
    """A worker whose every wait sees 100 more notifications of `payload`, after its first
    claim and the next poll's (the fake clock jumps to it)."""
    worker = loop()
    session = SocketSession()
    worker.worker._open_session = lambda *_: session
    worker.clock.on_wait = lambda _: session.notify(*[payload] * 100)
    worker.turns(2)
    return worker


def test_a_flood_for_its_queue_costs_one_claim_per_quiet_period(loop):
    worker = _flooded(loop, "q")
    started, claims = worker.clock.now(), len(worker.jobs.called("complete_and_claim"))
    for _ in range(200):
        worker.turn()
    made = len(worker.jobs.called("complete_and_claim")) - claims
    elapsed = worker.clock.now() - started
    # Without coalescing, every notification wakes the loop for a claim: 200 claims at once.
    assert 0 < made <= elapsed / QUIET_S + 1
    assert elapsed < worker.worker.settings.poll_interval  # no poll among them


def test_a_flood_for_other_queues_costs_no_claim_and_few_wakes(loop):
    worker = _flooded(loop, "elsewhere")
    started, claims = worker.clock.now(), len(worker.jobs.called("complete_and_claim"))
    for _ in range(40):
        worker.turn()
    assert len(worker.jobs.called("complete_and_claim")) == claims
    assert worker.clock.now() - started >= 40 * QUIET_S - 1e-6  # one read per quiet period


def test_a_job_notified_right_after_a_false_hint_waits_at_most_the_quiet_period(loop):
    worker = loop()
    worker.turn()
    worker.turn()  # at the next poll; nothing to claim
    worker.db.session.notify("q")  # a hint for nothing: a quiet period starts
    worker.turn()
    notified_at = worker.clock.now()
    job_id = worker.jobs.insert("unit.ok")
    worker.db.session.notify("q")
    worker.turn()  # quiet: the notification waits in the socket
    worker.turn()
    claimed_at = worker.jobs.jobs[job_id].claimed_at
    assert claimed_at is not None and claimed_at - notified_at <= QUIET_S + 1e-9


def test_a_notification_that_finds_a_job_is_claimed_at_once_and_the_next_one_too(loop):
    worker = loop()
    worker.turn()
    worker.turn()
    for _ in range(3):
        job_id = worker.jobs.insert("unit.ok")
        worker.db.session.notify("q")
        notified_at = worker.clock.now()
        worker.turn()
        assert worker.jobs.jobs[job_id].claimed_at == notified_at
        worker.finished()
        worker.turn()  # reports it done


class _Session:
    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.reads = 0

    def notifications(self) -> list[str]:
        self.reads += 1
        payloads, self.payloads = self.payloads, []
        return payloads

    def fds(self) -> list[int]:
        return [7]


def test_hints_keep_notifications_in_the_socket_while_quiet():
    hints, session = NotifyHints(["q"], quiet=0.5), _Session()
    session.payloads = ["q"]
    assert hints.read(session, 10.0)
    hints.settle(10.0, worked=False)
    assert hints.quiet_until == 10.5 and hints.fds(session, 10.1) == []
    session.payloads = ["q"] * 1000
    assert not hints.read(session, 10.2) and session.reads == 1
    assert hints.read(session, 10.5) and hints.fds(session, 10.5) == [7]
    hints.settle(10.5, worked=True)
    assert hints.quiet_until is None


def test_the_late_notification_of_a_job_already_claimed_starts_no_quiet_period(loop):
    """A claim made for another reason (here the first one) takes a job before its notification
    is read; reading it afterwards finds nothing. The next job's notification is acted on at
    once, not after a quiet period (before: up to QUIET_S later, W3's p99 under load)."""
    worker = loop()
    session = SocketSession()
    worker.worker._open_session = lambda *_: session
    first = worker.jobs.insert("unit.ok")
    worker.turn()  # the first claim takes it; its notification has not arrived yet
    assert worker.jobs.jobs[first].status == "running"
    session.notify("q")  # the first job's notification, read after its claim
    worker.finished()
    second: list[int] = []
    notified_at: list[float] = []

    def enqueue(_timeout: float | None) -> None:
        if not second:  # the next job commits while the worker waits
            second.append(worker.jobs.insert("unit.ok"))
            session.notify("q")
            notified_at.append(worker.clock.now())

    worker.clock.on_wait = enqueue
    worker.turn()  # reports the first job done; its notification finds nothing more
    worker.clock.on_wait = None
    worker.turn()
    assert second and worker.jobs.jobs[second[0]].claimed_at == notified_at[0]


def test_hints_forgive_one_turn_heard_for_nothing_per_claim_that_found_jobs():
    hints, session = NotifyHints(["q"], quiet=0.5), _Session()
    hints.settle(1.0, worked=True)  # a claim found jobs
    session.payloads = ["q"]
    assert hints.read(session, 2.0)
    hints.settle(2.0, worked=False)  # their echo: no quiet period
    assert hints.quiet_until is None
    session.payloads = ["q"]
    assert hints.read(session, 3.0)
    hints.settle(3.0, worked=False)  # heard for nothing again: a flood, quiet
    assert hints.quiet_until == 3.5
