"""A Worker on fakes, driven turn by turn, and the tasks its tests run (tests/unit/conftest.py
builds it as the `loop` fixture)."""

from __future__ import annotations

import threading
from typing import Any

from fakes import FakeClock, FakeDatabase, FakeJobQueue
from helpers import wait_until

import pgdyno
from pgdyno.worker.loop import Worker

#: Gates of the `unit.gate` task: a job runs until the test sets its event.
gates: dict[str, threading.Event] = {}


@pgdyno.task("unit.ok")
def ok(value: Any = None) -> Any:
    return value


@pgdyno.task("unit.fails")
def fails() -> None:
    raise RuntimeError("try again")


@pgdyno.task("unit.gate")
def gate(key: str) -> str:
    gates.setdefault(key, threading.Event()).wait(30)
    return key


def open_gate(key: str) -> None:
    gates.setdefault(key, threading.Event()).set()


class Loop:
    """A Worker on fakes, driven turn by turn (`turn()` is one pass of Worker.run's loop)."""

    def __init__(self, worker: Worker, clock: FakeClock, jobs: FakeJobQueue, db: FakeDatabase):
        self.worker, self.clock, self.jobs, self.db = worker, clock, jobs, db
        worker._pool.start()

    def turn(self) -> bool:
        """One turn; True when the worker would exit."""
        return self.worker._turn()

    def turns(self, count: int) -> None:
        for _ in range(count):
            assert not self.turn(), "the worker exited"

    def until_exit(self, limit: int = 100) -> int:
        """Turn until the worker exits; the number of turns it took."""
        for taken in range(1, limit + 1):
            if self.turn():
                return taken
        raise AssertionError(f"the worker did not exit in {limit} turns")

    def finished(self, count: int = 1) -> None:
        """Wait (real time, briefly) until `count` jobs' outcomes are back from the threads."""
        wait_until(lambda: len(self.worker._outcomes) >= count, timeout=5, message="outcomes")

    def close(self) -> None:
        self.worker._disconnect()
        self.worker._pool.stop()
