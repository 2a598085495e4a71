"""The worker's executor threads and the self-pipe that wakes its loop.

The loop thread talks to Postgres; `size` executor threads run claimed jobs and queue their
outcomes. A thread that finishes a job while the loop sleeps writes one byte to the wake-up
pipe, so the loop reports it at once, without polling.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue

from pgdyno import db
from pgdyno.queue import ClaimedJob
from pgdyno.worker import executor as execution
from pgdyno.worker.executor import Outcome


class Wakeup:
    """A self-pipe: executor threads, signal handlers and task progress wake the loop."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        #: True while the loop waits: only then is a poke worth a system call.
        self.sleeping = False

    def poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"x")

    def poke_if_sleeping(self) -> None:
        if self.sleeping:
            self.poke()

    def wait(
        self, fds: list[int], timeout: float, ready: Callable[[], bool] = lambda: False
    ) -> None:
        """Wait until one of `fds` is readable, a poke, or `timeout`; not at all if `ready()`
        (checked after `sleeping` is set, so a poke cannot slip between check and wait)."""
        self.sleeping = True
        try:
            if not ready():
                db.wait_readable([*fds, self._read], timeout)
        finally:
            self.sleeping = False
        self.drain()

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass


class ExecutorPool:
    """`size` daemon threads running claimed jobs; outcomes land in `outcomes`."""

    def __init__(self, size: int, wakeup: Wakeup, bind: Callable[[], None]) -> None:
        self.size = size
        self.outcomes: deque[Outcome] = deque()
        self._wakeup = wakeup
        self._bind = bind
        self._inbox: SimpleQueue[ClaimedJob | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.size):
            thread = threading.Thread(
                target=self._run_forever, name=f"pgdyno-exec-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def submit(self, job: ClaimedJob) -> None:
        self._inbox.put(job)

    def stop(self) -> None:
        """Let idle threads exit; a thread still running a job dies with the process."""
        for _ in self._threads:
            self._inbox.put(None)

    def _run_forever(self) -> None:
        self._bind()
        while (job := self._inbox.get()) is not None:
            self.outcomes.append(execution.run(job))
            self._wakeup.poke_if_sleeping()
