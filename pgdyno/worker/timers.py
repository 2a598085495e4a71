"""The worker loop's deadlines: when to poll, heartbeat, claim a scheduled job, call the idle
callback, and give up on the grace period. Plain data on the loop's clock, None for never, so
the loop's wait is `next_wake()` with no sentinel to get wrong."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Timers:
    """The loop's deadlines, in seconds on its clock; None means never."""

    #: The next fallback poll (rescue expired leases, claim without a notification).
    poll: float | None = 0.0
    #: The next lease renewal; set only while jobs run.
    heartbeat: float | None = None
    #: When the earliest scheduled (run_at) job of the worker's queues becomes due.
    due: float | None = None
    #: The next call of the idle callback; set only while idle, with a callback.
    idle_call: float | None = None
    #: The end of the grace period; set once stopping.
    grace: float | None = None
    #: The next write of the worker's registry row (pgdyno/registry.py), when registered.
    registry: float | None = None

    def next_wake(self) -> float | None:
        """The earliest deadline, or None when nothing is due ever."""
        deadlines = (self.poll, self.heartbeat, self.due, self.idle_call, self.grace, self.registry)
        return min((deadline for deadline in deadlines if deadline is not None), default=None)


def passed(deadline: float | None, now: float) -> bool:
    """Whether a deadline (None: never) has come."""
    return deadline is not None and now >= deadline
