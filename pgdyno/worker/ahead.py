"""Claiming ahead: a worker whose jobs are short claims more than its free slots.

At `--concurrency 1` a worker that claims one job per statement spends a round trip, a commit
and two thread hand-offs per job: a queue of short jobs drains at a few hundred to a thousand a
second. So when the jobs it ran lately were all short, the worker claims up to `extra` jobs
beyond its slots: they wait in its executor threads' inbox (leased, heartbeated, counted as
running) and start the moment a thread is free, without a turn of the loop; finished jobs are
reported and the next ones claimed in one statement per batch.

How a heavy job never waits behind jobs claimed ahead, nor holds them:
- the worker claims ahead only when every one of its last WINDOW jobs ran shorter than
  SHORT_S, and only as many as its threads run in BUDGET_S at that pace: a heavy queue (the
  reports queue, anything that takes SHORT_S or more) stays one job per slot;
- a job claimed ahead that has not started HOLD_S after its claim (the job before it turned out
  heavy) is handed back, unstarted and uncounted, for any worker to take; and a worker that
  handed jobs back claims none ahead until its last WINDOW jobs are short again.

So a job claimed ahead starts within HOLD_S or goes back to its queue, and a heavy job claimed
ahead waits at most HOLD_S behind short ones.
"""

from __future__ import annotations

from collections import deque

#: Jobs whose durations decide (the most recent ones).
WINDOW = 32
#: A job this long or longer is not short: no claiming ahead while one is in the window.
SHORT_S = 0.005
#: Time the jobs claimed ahead should take at the pace of the window's longest job.
BUDGET_S = 0.02
#: The most jobs claimed ahead per executor thread.
MAX_PER_THREAD = 100
#: A job claimed ahead that has not started this long after its claim is handed back.
HOLD_S = 0.1


class ClaimAhead:
    """The durations of a worker's last jobs, and what they allow it to claim ahead."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._durations: deque[float] = deque(maxlen=WINDOW)

    def finished(self, duration_s: float) -> None:
        """A job ran for `duration_s` seconds."""
        self._durations.append(duration_s)

    def handed_back(self) -> None:
        """Jobs claimed ahead waited too long: claim none ahead until WINDOW short jobs ran."""
        self._durations.clear()

    @property
    def extra(self) -> int:
        """Jobs to claim beyond the free slots (0: one job per slot)."""
        if len(self._durations) < WINDOW:
            return 0
        longest = max(self._durations)
        if longest >= SHORT_S:
            return 0
        per_thread = int(BUDGET_S / max(longest, BUDGET_S / MAX_PER_THREAD))
        return self._threads * per_thread

    def flush_now(self, done: int, queued: int) -> bool:
        """Whether to report `done` finished jobs (and claim) now, with `queued` jobs claimed
        ahead still waiting for a thread: once half the jobs claimed ahead are done, or the
        threads are about to run dry; at once when not claiming ahead."""
        extra = self.extra
        if extra == 0 or queued <= self._threads:
            return True
        return done >= max(1, extra // 2)
