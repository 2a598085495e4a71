"""The queues pgdyno shows one by one, and the rest summed: bounded whatever names clients invent.

Any enqueue role may insert jobs into any queue name, so nothing pgdyno writes or serves may
list every queue. The dashboard's overview, /metrics, the dispatcher's sampler (the rows of
pgdyno.metrics_samples), `pgdyno queue list` and `pgdyno status` all show:

- the queues that matter, always (`matter`): named by a scale rule (pgdyno.scale_rules),
  served by a live worker (pgdyno.workers) or paused (pgdyno.queues). An operator put each
  there; an enqueuing client cannot;
- the OTHERS_SHOWN deepest of the rest (most due ready + running jobs, then most scheduled);
- one row summing all the others, named OTHER (""; the database refuses an empty queue name,
  so no client can make a queue that poses as it or hides in it), with `queues` their number.

The finished-job counters the sampler keeps are bounded the same way (at most COUNTED_QUEUES
queues beyond those that matter, sampler.advance_counters). Statements in pgdyno/sql/web.sql;
only psycopg needed (the dispatcher and the CLI import this module without Flask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgdyno import registry, sql

#: The deepest queues shown beyond those that matter.
OTHERS_SHOWN = 20
#: The name of the row that sums the queues not shown: no job's queue can be empty.
OTHER = ""
#: How the dashboard and the CLI name that row.
OTHER_LABEL = "(other queues)"


@dataclass(frozen=True)
class Summary:
    """`queues`: one dict per queue shown, by name; `other`: the sum of the rest (with
    `queues`, how many), or None when every queue is shown."""

    queues: list[dict[str, Any]]
    other: dict[str, Any] | None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The queues shown, then the summed row when there is one."""
        return self.queues + ([self.other] if self.other else [])


def matter(conn: psycopg.Connection) -> list[str]:
    """The queues always shown one by one: scale rules' queues, live workers' (heartbeat within
    registry.EXPIRY_S), paused ones; sorted."""
    row = conn.execute(
        sql.query("web_queues_that_matter"), {"expiry": registry.EXPIRY_S}
    ).fetchone()
    return list(row[0]) if row else []


def queues(
    conn: psycopg.Connection, others: int = OTHERS_SHOWN, known: list[str] | None = None
) -> Summary:
    """Per queue shown: queue, queues (1), process_type and quantity (its scale rule's type and
    that type's formation quantity, else None), ready (due), scheduled, running,
    oldest_ready_age_s (0 without a due ready job), done, failed, cancelled (the counters),
    paused, paused_at. At most len(known) + `others` queues, then the summed row. `known`:
    matter(conn) when the caller has read it already."""
    params = {"known": matter(conn) if known is None else known, "others": others}
    rows = conn.cursor(row_factory=dict_row).execute(sql.query("web_queue_summary"), params)
    return _split(rows.fetchall())


def status(conn: psycopg.Connection, others: int = OTHERS_SHOWN) -> Summary:
    """`pgdyno status`: per queue with jobs, counted from every row of pgdyno.jobs (finished
    ones until pruned): queue, queues (1), ready, running, done, failed, cancelled,
    oldest_ready_age_s (seconds, rounded to ms; None without a due ready job). The queues that
    matter that have jobs, the `others` deepest of the rest, then the summed row."""
    params = {"known": matter(conn), "others": others}
    rows = conn.cursor(row_factory=dict_row).execute(sql.query("web_queue_status"), params)
    found = rows.fetchall()
    for row in found:
        age = row["oldest_ready_age_s"]
        finite = age is not None and math.isfinite(age)  # JSON has no Infinity
        row["oldest_ready_age_s"] = round(max(age, 0.0), 3) if finite else None
    return _split(found)


def _split(rows: list[dict[str, Any]]) -> Summary:
    if rows and rows[-1]["queue"] == OTHER:
        return Summary(rows[:-1], rows[-1])
    return Summary(rows, None)


def jobs(row: dict[str, Any]) -> int:
    """The jobs waiting or running in a summary row (ready, scheduled, running)."""
    return int(row["ready"]) + int(row.get("scheduled") or 0) + int(row["running"])
