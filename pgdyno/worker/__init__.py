"""The worker runtime: claim jobs, run them, report outcomes, and drain on SIGTERM.

- `loop.py`: `Worker`, the loop that wakes on NOTIFY or a poll, claims in batches, heartbeats
  and hands jobs back on shutdown; the only part of the worker that talks to Postgres;
- `timers.py`: the loop's deadlines (poll, heartbeat, scheduled job, idle call, grace);
- `session.py`: its two connections, and the job statements it runs on them (`JobQueue`);
- `executor.py`: runs one claimed job's task and turns what happened into an `Outcome`;
  `current_job()` and `JobContext` for the running task;
- `abandoned.py`: the thread pool's timeouts: a job past its timeout fails at once, its task is
  asked to stop, and its thread keeps its slot until it returns;
- `storable.py`: what an outcome may put in the database (results up to 1 MiB of JSON, text
  without NUL or lone surrogates);
- `threads.py`: the executor threads, which run each job in themselves or in a child process
  (the self-pipe that wakes the loop is pgdyno.clock's);
- `pool.py`, `child.py`, `forkserver_init.py`: the process pool (`--pool process`): a fresh
  process per job from a fork server, its timeout and memory guard (`memory.py`);
- `fencing.py`: the writes the database refused because the worker no longer held the attempt;
- `health.py`: the LISTEN connection's self-NOTIFY check;
- `vacuum.py`: `HotTableVacuum`, which keeps the ready/running partition small.

The worker knows nothing of scaling: scale-to-zero reaches it as an `IdleCallback`
(pgdyno.scaling.idle).
"""

from __future__ import annotations

from pgdyno.worker.loop import IdleCallback, Worker, worker_id

__all__ = ["IdleCallback", "Worker", "worker_id"]
