"""Fixtures of the unit tier (no I/O): a fake clock, and a Worker on fake job statements.

`loop` builds a Worker wired to the fakes (tests/fakes.py) and drives it one turn at a time;
add scaling or worker cases by inserting jobs into `loop.jobs`, sending notifications with
`loop.db.session.notify(...)`, and asserting on `loop.jobs.calls` and `loop.clock.waits`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes import FakeClock, FakeDatabase, FakeJobQueue
from loop_harness import Loop, gates, open_gate

from pgdyno.config import Settings
from pgdyno.worker.cancels import CancelWatch
from pgdyno.worker.loop import Worker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loop(clock: FakeClock) -> Iterator[Callable[..., Loop]]:
    """loop(queues=("q",), burst=False, idle_callback=None, **settings) -> Loop."""
    made: list[Loop] = []

    def make(
        queues: tuple[str, ...] = ("q",),
        *,
        burst: bool = False,
        idle_callback: Any = None,
        **settings: Any,
    ) -> Loop:
        config = Settings(
            database_url="postgresql://fake",
            **{"poll_interval": 60.0, "lease": 30.0, "grace": 5.0, **settings},
        )
        jobs, db = FakeJobQueue(clock), FakeDatabase()
        worker = Worker(
            config,
            queues,
            burst=burst,
            idle_callback=idle_callback,
            id="winston.1:1:ab",
            clock=clock,
            jobs=jobs,
            connect=db.open,
            cancels=CancelWatch("winston.1:1:ab", requested=jobs.cancel_requested),
        )
        made.append(Loop(worker, clock, jobs, db))
        return made[-1]

    yield make
    for key in list(gates):
        open_gate(key)  # let blocked executor threads end
    gates.clear()
    for made_loop in made:
        made_loop.close()
