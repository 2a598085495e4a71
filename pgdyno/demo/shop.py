"""The reports demo: a small shop (customers, orders) and the report jobs `make run` enqueues.

    from pgdyno.demo import shop
    shop.seed(conn, customers=2_000, orders=200_000)   # a second or two
    job_ids = shop.enqueue_reports(conn)               # the queue "reports", run by winston

The data is generated inside Postgres (generate_series, no random()), so seeding a million
orders takes seconds and every run produces the same reports. The reports themselves are the
files in pgdyno/demo/reports/ (revenue_by_month, top_customers, orders_export), shipped in the
package: `reports_dir()` is the folder to give workers as PGDYNO_REPORTS_DIR.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from pgdyno import sql
from pgdyno.enqueue import JobSpec, enqueue_many

#: The report jobs of the demo: args of the built-in `report` task.
DEMO_REPORTS: list[dict[str, Any]] = [
    {"name": "revenue_by_month", "params": {"since": "2025-01-01"}},
    {"name": "top_customers", "params": {"limit": 10, "countries": ["DE", "FR", "NL"]}},
    {"name": "orders_export", "params": {"since": "2025-07-01"}},
]


def reports_dir() -> Path:
    """The demo's report files, inside the installed package (PGDYNO_REPORTS_DIR for them)."""
    return Path(str(resources.files(__package__) / "reports"))


def install(conn: psycopg.Connection) -> None:
    """Create the demo schema, tables and seed function (idempotent)."""
    conn.execute(sql.load("pgdyno.demo", "shop.sql")["demo_install"])


def seed(conn: psycopg.Connection, *, customers: int = 2_000, orders: int = 200_000) -> None:
    """Install the demo schema and replace its data with `customers` and `orders` rows."""
    if customers < 1 or orders < 0:
        raise ValueError("the demo needs at least one customer and no negative orders")
    install(conn)
    with conn.transaction():
        conn.execute(
            sql.load("pgdyno.demo", "shop.sql")["demo_seed"],
            {"customers": customers, "orders": orders},
        )


def enqueue_reports(
    conn: psycopg.Connection,
    *,
    queue: str = "reports",
    reports: list[Mapping[str, Any]] | None = None,
) -> list[int]:
    """Enqueue the demo's report jobs (one COPY) and return their ids."""
    return enqueue_many(
        conn,
        [
            JobSpec("report", dict(args), queue=queue)
            for args in (reports if reports is not None else DEMO_REPORTS)
        ],
    )
