"""The scaling timeline's series: per process type, its quantity and its queues' depth over
the last hour (from pgdyno.metrics_samples), day or week (from pgdyno.metrics_minutes), and
its scale events.

Times are Unix seconds. A gap in the samples longer than GAP_FACTOR heartbeats (or buckets)
means nobody was sampling (no acting dispatcher): the series gets a null there so the chart
breaks the line instead of drawing a made-up value across it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgdyno import db, sql
from pgdyno.scaling import policy as scaling
from pgdyno.scaling.state import recorded_rules
from pgdyno.web.pages import redact
from pgdyno.web.sampler import HEARTBEAT_S

#: name -> (span in seconds, bucket in seconds): the hour shows every sample (at most one per
#: second, usually far fewer), a day or a week about 360 buckets of the per-minute table.
RANGES: dict[str, tuple[int, int]] = {
    "hour": (3600, 1),
    "day": (86400, 240),
    "week": (7 * 86400, 1680),
}
GAP_FACTOR = 2.5


def series(conn: psycopg.Connection, range_name: str = "hour") -> dict[str, Any]:
    """{"now", "range", "span_s", "types": [{"process_type", "queues", "max", "points",
    "events"}]}; points are {t, quantity, depth} (None in a gap), depth being the type's
    queues' ready + running jobs."""
    span, bucket = RANGES.get(range_name, RANGES["hour"])
    now = db.scalar(conn, sql.query("web_now"))
    types = []
    for name, policy in scaling.policies(recorded_rules(conn)).items():
        params = {
            "process_type": name,
            "range": timedelta(seconds=span),
            "bucket": timedelta(seconds=bucket),
        }
        cur = conn.cursor(row_factory=dict_row)
        statement = "web_timeline_samples" if span <= 3600 else "web_timeline_minutes"
        samples = cur.execute(sql.query(statement), params).fetchall()
        events = cur.execute(sql.query("web_timeline_events"), params).fetchall()
        for event in events:
            if event["outcome"] != "ok":  # an error's text may quote a URL
                event["outcome"] = redact(event["outcome"])
        types.append(
            {
                "process_type": name,
                "queues": list(policy.queues),
                "max": policy.max_quantity,
                "points": _with_gaps(samples, now, max(HEARTBEAT_S, bucket) * GAP_FACTOR),
                "events": events,
            }
        )
    return {"now": now, "range": range_name, "span_s": span, "types": types}


def _with_gaps(samples: list[dict[str, Any]], now: float, gap: float) -> list[dict[str, Any]]:
    """The samples, a null point inside each gap longer than `gap` s, and the last sample
    carried to `now` when it is recent (the values held since: samples are only written
    when something changes, or once a minute)."""
    points: list[dict[str, Any]] = []
    for sample in samples:
        if points and sample["t"] - points[-1]["t"] > gap:
            points.append(_null(points[-1]["t"] + gap / 2))
        points.append(sample)
    if points and now - points[-1]["t"] <= gap:
        points.append({**points[-1], "t": now})
    elif points:
        points.append(_null(points[-1]["t"] + gap / 2))
    return points


def _null(t: float) -> dict[str, Any]:
    return {"t": t, "quantity": None, "depth": None}
