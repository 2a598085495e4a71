"""Imported first by the job processes' fork server (worker/pool.py), and by nothing else.

- SIGTERM is ignored. On Heroku (and under `pgdyno dev`) SIGTERM reaches every process of
  the dyno at once; the fork server and the job processes it forks must outlive it: the worker
  lets running jobs finish within the grace period, then hands back and kills what is left
  itself. (multiprocessing already ignores SIGINT there.) The job processes inherit this.
- The fork server dies with the worker (Linux: PR_SET_PDEATHSIG), and each job process dies
  with the fork server (worker/child.py), so a worker killed with kill -9 leaves no job running
  behind it to run a second time beside its rescue. multiprocessing alone would not do it: the
  fork server exits when the worker's end of a pipe closes, but every job process holds a copy
  of that end.

Importing this module anywhere else would make that process deaf to SIGTERM: the worker never
imports it.
"""

from __future__ import annotations

import signal

from pgdyno.worker.child import die_with_parent

signal.signal(signal.SIGTERM, signal.SIG_IGN)
die_with_parent()
