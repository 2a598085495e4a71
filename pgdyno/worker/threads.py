"""The worker's executor threads.

The loop thread talks to Postgres; `size` executor threads run claimed jobs and queue their
outcomes. A thread that finishes a job while the loop sleeps writes one byte to the wake-up
pipe (pgdyno.clock.Wakeup), so the loop reports it at once, without polling.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue

from pgdyno.clock import Wakeup
from pgdyno.queue import ClaimedJob
from pgdyno.worker import executor
from pgdyno.worker.executor import Outcome


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
            self.outcomes.append(executor.run(job))
            self._wakeup.poke_if_sleeping()
