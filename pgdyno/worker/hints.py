"""NOTIFY payloads as hints, coalesced: what a flood of notifications can cost a worker.

Any role may `NOTIFY pgdyno_jobs` with any payload, as often as it likes: Postgres has no
privilege for it. A notification only says "look at this queue"; the worker polls anyway. The
loop reads the listen connection when it wakes and claims when a payload names one of its
queues. After a turn whose notifications led to no work (payloads for other queues, or a
claim that found nothing), the worker stops listening for `quiet` seconds: notifications wait
in the socket and are read together when the quiet period ends, and a pending hint is claimed
then. So a flood costs at most one read and one claim per quiet period, while a notification
that finds work is acted on at once, and one that comes right after a false hint waits at most
`quiet` seconds (25 ms by default).

A worker often claims a job before it reads that job's notification: a claim made for another
reason (the first one, a poll, the due timer, the claim after registering as a sleeper, one
that reports finished jobs) sees a job whose commit is visible while the committing session has
not yet signalled its listeners. Reading that notification next finds nothing: it is the
job's echo, not a false hint, and a quiet period after it would keep the worker from hearing
the next job for up to `quiet` seconds (W3's p99 on a loaded machine: a job 20 ms after
another waited ~10 ms). So the first turn heard for nothing after a claim that found jobs starts
no quiet period: a flood costs at most one more read and claim per claim that found work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

#: Seconds a worker stops listening after notifications that led to no work.
QUIET_S = 0.025


class Listening(Protocol):
    """What the hints read from: the worker's session (worker/session.py)."""

    def notifications(self) -> list[str]: ...

    def fds(self) -> list[int]: ...


class NotifyHints:
    """The worker loop's view of its notifications: read, claim or keep quiet.

    Per turn: `read()` (True: claim), then `settle()` with whether the turn's claim found
    jobs; the loop waits on `fds()` until `quiet_until` at the latest.
    """

    def __init__(self, queues: Iterable[str], quiet: float = QUIET_S) -> None:
        self._queues = frozenset(queues)
        self._quiet = quiet
        #: While set: the listen socket is not read, nor waited on, before this time.
        self.quiet_until: float | None = None
        self._heard = False
        #: The last claim found jobs, and no turn heard for nothing since: the notifications
        #: of those jobs may still arrive (read after the claim), and find nothing.
        self._echo = False

    def read(
        self,
        session: Listening,
        now: float,
        also: Callable[[list[str]], object] | None = None,
    ) -> bool:
        """Read the notifications unless quiet; True when one names one of the queues.
        `also` is given every payload read (the worker's cancel watch takes control payloads).

        Raises OperationalError when the listen connection is gone (session.notifications)."""
        if self.quiet_until is not None and now < self.quiet_until:
            return False
        self.quiet_until = None
        payloads = session.notifications()
        if also is not None and payloads:
            also(payloads)
        self._heard = self._heard or bool(payloads)
        return any(payload in self._queues for payload in payloads)

    def settle(self, now: float, worked: bool) -> None:
        """After the turn's claim: `worked` when it found jobs. Notifications heard for
        nothing start a quiet period, unless they may be the echo of the jobs the last claim
        found (the first such turn after it); work ends one."""
        if worked:
            self.quiet_until = None
            self._echo = True
        elif self._heard:
            if self._echo:
                self._echo = False
            else:
                self.quiet_until = now + self._quiet
        self._heard = False

    def fds(self, session: Listening, now: float) -> list[int]:
        """The sockets to wait on: none while quiet (the loop wakes at quiet_until)."""
        if self.quiet_until is not None and now < self.quiet_until:
            return []
        return session.fds()


def earliest(*deadlines: float | None) -> float | None:
    """The earliest of the deadlines that are set (None: none is)."""
    return min((deadline for deadline in deadlines if deadline is not None), default=None)
