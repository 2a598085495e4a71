"""/metrics: the queue and scaling figures in Prometheus text format, read at scrape time.

A custom collector of the official prometheus_client library, so names, labels, escaping and
the exposition format are the library's. Each scrape runs a few small queries: live counts from
the active partition, finished totals from pgdyno.metrics_counters (kept by the dispatcher's
sampler, never a count of the whole history), formations and scale events.

- pgdyno_queue_jobs{queue,status}: jobs ready (due), scheduled (ready, not yet due), running
- pgdyno_queue_oldest_ready_age_seconds{queue}: the oldest due ready job's wait (0 if none)
- pgdyno_jobs_finished_total{queue,status}: jobs that reached done, failed or cancelled
- pgdyno_formation_quantity{process_type}: the quantity pgdyno last set or read
- pgdyno_scale_events_total{process_type,outcome}: scaling actions, outcome ok or error
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pgdyno import sql

ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection]]


class PgdynoCollector(Collector):
    def __init__(self, connection: ConnectionFactory) -> None:
        self._connection = connection

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "pgdyno_queue_jobs",
            "Jobs ready (due), scheduled (ready, not yet due) and running, per queue.",
            labels=["queue", "status"],
        )
        oldest = GaugeMetricFamily(
            "pgdyno_queue_oldest_ready_age_seconds",
            "Seconds the oldest due ready job of the queue has waited (0 when none waits).",
            labels=["queue"],
        )
        finished = CounterMetricFamily(
            "pgdyno_jobs_finished",
            "Jobs that reached a finished status (counted by the dispatcher's sampler).",
            labels=["queue", "status"],
        )
        quantity = GaugeMetricFamily(
            "pgdyno_formation_quantity",
            "Dynos of the process type, as pgdyno last set or read them.",
            labels=["process_type"],
        )
        events = CounterMetricFamily(
            "pgdyno_scale_events",
            "Scaling actions recorded in pgdyno.scale_events, by outcome (ok or error).",
            labels=["process_type", "outcome"],
        )
        with self._connection() as conn:
            for row in conn.execute(sql.query("web_queue_overview"), {}).fetchall():
                name, ready, scheduled, running, age = row[0], row[2], row[3], row[4], row[8]
                jobs.add_metric([name, "ready"], ready)
                jobs.add_metric([name, "scheduled"], scheduled)
                jobs.add_metric([name, "running"], running)
                oldest.add_metric([name], age or 0.0)
            for name, status, total in conn.execute(sql.query("metrics_counters_all"), {}):
                finished.add_metric([name, status], total)
            for row in conn.execute(sql.query("formations_all"), {}).fetchall():
                if row[1] is not None:
                    quantity.add_metric([row[0]], row[1])
            for name, outcome, count in conn.execute(sql.query("metrics_scale_events_count"), {}):
                events.add_metric([name, outcome], count)
        yield from (jobs, oldest, finished, quantity, events)


def registry(connection: ConnectionFactory) -> CollectorRegistry:
    """A registry holding only pgdyno's collector (no process metrics of the web server)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PgdynoCollector(connection))
    return reg
