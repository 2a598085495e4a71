"""Schedules: recurring jobs, enqueued exactly once per scheduled time by the acting dispatcher.

- `timing.py`: when a schedule runs (a cron expression in a time zone, read by cronsim, or a
  fixed period on a grid counted from the epoch);
- `declare.py`: `@pgdyno.periodic`, schedules declared in Python beside their task;
- `store.py`: the rows of pgdyno.schedules (the CLI's add/list/remove/pause/resume, the sync of
  Python declarations);
- `runner.py`: `ScheduleRunner`, the dispatcher's part: claim each due run and enqueue its job in
  one transaction, and wake the dispatcher at the next run.
"""

from __future__ import annotations

from pgdyno.schedules.declare import periodic

__all__ = ["periodic"]
