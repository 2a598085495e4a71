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
- pgdyno_queue_paused{queue}: 1 while the queue is paused (pgdyno queue pause), else 0
- pgdyno_workers{process_type,state}: registered workers (pgdyno.workers), live or lost
  (no heartbeat for registry.EXPIRY_S); process_type "" for workers that do not know theirs
- pgdyno_other_queues: how many queues are not shown one by one

The per-queue series are those of the queues summary.queues shows (the queues that matter,
the summary.OTHERS_SHOWN deepest others): a scrape's size does not grow with the queue names
clients invent. The other queues' jobs are summed under queue="" (an empty label value, which
PromQL selects with {queue=""}; no real queue can be named so), so sums over all queues stay
whole; their finished total may drop when a queue leaves that sum to be shown on its own
(rate() takes it for a counter reset).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pgdyno import registry as workers_registry
from pgdyno import sql
from pgdyno.web import summary

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
        paused = GaugeMetricFamily(
            "pgdyno_queue_paused",
            "1 while the queue is paused (its ready jobs are not claimed), else 0.",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            "pgdyno_workers",
            f"Registered workers per process type, live or lost (no heartbeat for "
            f"{workers_registry.EXPIRY_S:g} s).",
            labels=["process_type", "state"],
        )
        others = GaugeMetricFamily(
            "pgdyno_other_queues",
            'Queues not shown one by one: their jobs are summed under queue="".',
        )
        with self._connection() as conn:
            shown = summary.queues(conn)
            for row in shown.rows:
                name = row["queue"]
                for status in ("ready", "scheduled", "running"):
                    jobs.add_metric([name, status], row[status])
                for status in ("done", "failed", "cancelled"):
                    if row[status] or name == summary.OTHER:
                        finished.add_metric([name, status], row[status])
                oldest.add_metric([name], row["oldest_ready_age_s"] or 0.0)
                if name != summary.OTHER:
                    paused.add_metric([name], 1.0 if row["paused"] else 0.0)
            others.add_metric([], shown.other["queues"] if shown.other else 0)
            formations = conn.execute(sql.query("formations_all"), {}).fetchall()
            for formation in formations:
                if formation[1] is not None:
                    quantity.add_metric([formation[0]], formation[1])
            for name, outcome, count in conn.execute(sql.query("metrics_scale_events_count"), {}):
                events.add_metric([name, outcome], count)
            counts = Counter(
                (worker["process_type"] or "", worker["state"])
                for worker in workers_registry.workers(conn)
            )
        # Every type with a formation row reads 0 live workers when it has none.
        process_types = {process_type for process_type, _ in counts} | {r[0] for r in formations}
        for process_type in sorted(process_types):
            for state in ("live", "lost"):  # both, so a type's lost workers read 0, not absent
                workers.add_metric([process_type, state], counts[(process_type, state)])
        yield from (jobs, oldest, finished, quantity, events, paused, workers, others)


def registry(connection: ConnectionFactory) -> CollectorRegistry:
    """A registry holding only pgdyno's collector (no process metrics of the web server)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PgdynoCollector(connection))
    return reg
