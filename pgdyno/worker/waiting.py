"""The worker's registration as a sleeper: enqueuers notify its queues only while it waits.

The enqueue trigger notifies a queue only when a session is registered as waiting on it
(pgdyno.sleepers, migration 0011): a notifying commit is serialised with every other one, and
most enqueues happen while workers are busy. So the loop registers before it sleeps with free
slots, and drops the registration while it has none:

- `before_sleep` registers (pgdyno.sleepers.wait_for_jobs) and returns True: the loop must
  claim once more before it sleeps, since a job committed before the registration sent no
  notification. The registration returns once the enqueuers that decided before it have
  committed, so that claim sees their jobs, and every later enqueue notifies.
- A registration that waited WAIT_S in vain (an enqueuer's commit that slow, or a role holding
  the queue's wake lock) stands, but is unsettled: the loop claims, and registers again at
  `retry_at`, RETRY_S later, doubling up to RETRY_MAX_S while it stays unsettled: the latest a
  job of such a commit waits after it.
- With no free slot the registration is dropped, once the worker has been full for
  KEEP_WHILE_FULL_S (a short job frees its slot before: the worker stays registered, and
  spends no statement at all on it); at once when stopping. A burst worker never registers.

Two statements (and one claim) when the worker turns idle after a job longer than
KEEP_WHILE_FULL_S; none per job while it stays busy, stays idle, or runs short jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import psycopg

from pgdyno.sleepers import WAIT_S

#: Seconds until an unsettled registration is tried again (after its own wait), doubling
#: while it stays unsettled, up to RETRY_MAX_S.
RETRY_S = 0.05
RETRY_MAX_S = 1.0
#: Seconds a full worker stays registered (its job may end at once, and it would only
#: register again); enqueuers notify it meanwhile, for nothing.
KEEP_WHILE_FULL_S = 0.05


class Statements(Protocol):
    """The two statements (pgdyno.queue re-exports pgdyno.sleepers' functions)."""

    def wait_for_jobs(
        self, conn: psycopg.Connection, *, holder: str, queues: Sequence[str], wait: float = ...
    ) -> bool: ...

    def stop_waiting(self, conn: psycopg.Connection) -> None: ...


class Waiting:
    """Whether the worker is registered as waiting for jobs of its queues, on its session."""

    def __init__(self, holder: str, queues: Sequence[str]) -> None:
        self._holder = holder
        self._queues = list(queues)
        self.registered = False
        #: When an unsettled registration is tried again; None: settled, or not registered.
        self.retry_at: float | None = None
        self._unsettled = 0  # registrations in a row that waited in vain
        #: When a full worker drops its registration; None: not full (or not registered).
        self.drop_at: float | None = None

    def before_sleep(
        self,
        jobs: Statements,
        conn: psycopg.Connection,
        now: float,
        *,
        free: bool,
        stopping: bool = False,
    ) -> bool:
        """Called right before the loop sleeps. `free`: the worker could take a job now (a
        free slot, not a burst worker); `stopping`: it never will. Returns True when it just
        registered: claim first."""
        if not free or stopping:
            if not self.registered:
                return False
            if not stopping and self.drop_at is None:
                self.drop_at = now + KEEP_WHILE_FULL_S
            elif stopping or (self.drop_at is not None and now >= self.drop_at):
                jobs.stop_waiting(conn)
                self.lost()
            return False
        self.drop_at = None
        if self.registered and (self.retry_at is None or now < self.retry_at):
            return False
        settled = jobs.wait_for_jobs(conn, holder=self._holder, queues=self._queues, wait=WAIT_S)
        self.registered = True
        if settled:
            self.retry_at, self._unsettled = None, 0
        else:
            backoff = min(RETRY_S * 2**self._unsettled, RETRY_MAX_S)
            self.retry_at = now + WAIT_S + backoff
            self._unsettled += 1
        return True

    def leave(self, jobs: Statements, conn: psycopg.Connection) -> None:
        """The worker stops: no enqueuer notifies for it any more."""
        if self.registered:
            jobs.stop_waiting(conn)
        self.lost()

    def wake_at(self) -> float | None:
        """The loop's next deadline for this registration (retry, or drop), if any."""
        if self.drop_at is not None:
            return self.drop_at
        return self.retry_at

    def lost(self) -> None:
        """The session is gone, and its registration with it (a reconnect registers anew)."""
        self.registered, self.retry_at, self.drop_at = False, None, None
