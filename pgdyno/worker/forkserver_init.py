"""Imported first by the job processes' fork server (worker/pool.py), and by nothing else.

On Heroku (and under `pgdyno dev`) SIGTERM reaches every process of the dyno at once. The
fork server and the job processes it forks must outlive it: the worker lets running jobs
finish within the grace period, then hands back and kills what is left itself. So here, in
the fork server only, SIGTERM is ignored (multiprocessing already ignores SIGINT there); the
job processes inherit that. Importing this module anywhere else would make that process deaf
to SIGTERM: the worker never imports it.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
