"""Claiming ahead: a worker whose jobs are short claims more than its free slots.

At `--concurrency 1` a worker that claims one job per statement spends a round trip, a commit
and two thread hand-offs per job: a queue of short jobs drains at a few hundred to a thousand a
second. So when the jobs it ran lately were all short, the worker claims up to `extra` jobs
beyond its slots: they wait in its executor threads' inbox (leased, heartbeated, counted as
running) and start the moment a thread is free, without a turn of the loop; finished jobs are
reported and the next ones claimed in one statement per batch.

How a heavy job never waits behind jobs claimed ahead, nor holds them:
- the worker claims ahead only when every one of its last WINDOW jobs ran shorter than
  SHORT_S, and only as many as it finished in BUDGET_S at its recent pace (at most
  MAX_AHEAD): a heavy queue (the reports queue, anything that takes SHORT_S or more) stays one
  job per slot;
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
#: Time the jobs claimed ahead should take at the worker's recent pace.
BUDGET_S = 0.02
#: The most jobs claimed ahead, whatever the pace.
MAX_AHEAD = 100
#: A job claimed ahead that has not started this long after its claim is handed back.
HOLD_S = 0.1


class ClaimAhead:
    """The durations and finishing times of a worker's last jobs, and what they allow it to
    claim ahead."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._durations: deque[float] = deque(maxlen=WINDOW)
        self._finished_at: deque[float] = deque(maxlen=WINDOW)

    def finished(self, duration_s: float, at: float) -> None:
        """A job ran for `duration_s` seconds and its outcome came back at `at` (the loop's
        clock, seconds)."""
        self._durations.append(duration_s)
        self._finished_at.append(at)

    def handed_back(self) -> None:
        """Jobs claimed ahead waited too long: claim none ahead until WINDOW short jobs ran."""
        self._durations.clear()
        self._finished_at.clear()

    @property
    def extra(self) -> int:
        """Jobs to claim beyond the free slots (0: one job per slot): what the worker finishes
        in BUDGET_S at the pace of its last WINDOW jobs (threads share one interpreter: the
        pace is the worker's, not a thread's times their number), at most MAX_AHEAD."""
        if len(self._durations) < WINDOW or max(self._durations) >= SHORT_S:
            return 0
        span = self._finished_at[-1] - self._finished_at[0]
        if span <= 0:
            return MAX_AHEAD  # the whole window finished at once (one batch): fast enough
        return min(MAX_AHEAD, int((len(self._finished_at) - 1) / span * BUDGET_S + 1e-9))

    def flush_now(self, done: int, queued: int) -> bool:
        """Whether to report `done` finished jobs (and claim) now, with `queued` jobs claimed
        ahead still waiting for a thread: once half the jobs claimed ahead are done, or the
        threads are about to run dry; at once when not claiming ahead."""
        extra = self.extra
        if extra == 0 or queued <= self._threads:
            return True
        return done >= max(1, extra // 2)
