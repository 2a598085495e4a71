"""The demo: what `make run` shows (`python -m pgdyno.demo`), and a task to try by hand.

- `__main__.py`: the scripted demo (embedded Postgres, local platform, reports, scale to zero);
- `shop.py` and `shop.sql`: the demo shop's tables and seed data, and the report jobs;
- here: the `demo.greet` task (`PGDYNO_IMPORT=pgdyno.demo`), used by the scaling benchmark.
"""

from __future__ import annotations

import time

import pgdyno


@pgdyno.task("demo.greet")
def greet(name: str, pause: float = 0.5) -> dict[str, str]:
    """A tiny task for trying the queue by hand and for the scaling benchmark
    (`PGDYNO_IMPORT=pgdyno.demo`); returns a greeting, stored as the job's result."""
    time.sleep(pause)
    return {"greeting": f"hello, {name}"}
