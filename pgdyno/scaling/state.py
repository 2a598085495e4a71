"""Every statement on the scaling tables: recorded rules, formations, queue load, the status view.

The dispatcher records its rules here so that workers and `pgdyno status` see them; the scaler
reads the load of a type's queues (from the small active partition) under its lock.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from pgdyno import registry, sql
from pgdyno.scaling import policy as scaling
from pgdyno.scaling.policy import Load, Rule, TypePolicy


def record_rules(conn: psycopg.Connection, rules: list[Rule]) -> None:
    """Replace the recorded rules with `rules` (the acting dispatcher's command line)."""
    with conn.transaction():
        conn.execute(sql.query("rules_clear"), {})
        for rule in rules:
            conn.execute(
                sql.query("rule_upsert"),
                {
                    "queue": rule.queue,
                    "process_type": rule.process_type,
                    "max_quantity": rule.max_quantity,
                    "jobs_per_dyno": rule.jobs_per_dyno,
                    "dyno_size": rule.dyno_size,
                    "linger_s": rule.linger_s,
                },
            )
        for process_type in {rule.process_type for rule in rules}:
            conn.execute(sql.query("formation_ensure"), {"process_type": process_type})


def recorded_rules(conn: psycopg.Connection) -> list[Rule]:
    rows = conn.execute(sql.query("rules_all"), {}).fetchall()
    return [
        Rule(queue, process_type, max_q, per, size, float(linger))
        for queue, process_type, max_q, per, size, linger in rows
    ]


def scaling_status(conn: psycopg.Connection) -> dict[str, dict[str, object]]:
    """Per process type: its rules, last known quantity, the standing API error, when the next
    API call may be made (Retry-After or backoff), its workers, and its last action.

    Keys: queues, max, per, size, linger_s; quantity (None: unknown); last_error,
    last_error_at, failures (consecutive failed calls); not_before, not_before_cause
    ("retry_after" or "backoff"; both None when calls are allowed); workers (live workers of
    the type), served_queues (the queues they serve, or its latest worker's), unserved_queues
    (rule queues none of them serves: their jobs would wait); last_event.
    """
    types: dict[str, dict[str, object]] = {}
    for name, policy in scaling.policies(recorded_rules(conn)).items():
        served, live = registry.served_queues(conn, name)
        types[name] = {
            "queues": list(policy.queues),
            "max": policy.max_quantity,
            "per": dict(policy.per_queue),
            "size": policy.dyno_size,
            "linger_s": policy.linger_s,
            "quantity": None,
            "last_error": None,
            "last_error_at": None,
            "failures": 0,
            "not_before": None,
            "not_before_cause": None,
            "workers": live,
            "served_queues": served,
            "unserved_queues": unserved(policy, served),
            "last_event": None,
        }
    for row in conn.execute(sql.query("formations_all"), {}).fetchall():
        name, quantity, _size, _known_at, error, error_at, not_before, cause, failures = row
        if name in types:
            types[name].update(
                quantity=quantity,
                last_error=error,
                last_error_at=error_at.isoformat() if error_at else None,
                failures=failures,
                not_before=not_before.isoformat() if not_before else None,
                not_before_cause=cause,
            )
    for row in conn.execute(
        sql.query("scale_events_recent"), {"process_type": None, "limit": 50}
    ).fetchall():
        entry = types.get(row[2])
        if entry is not None and entry["last_event"] is None:
            entry["last_event"] = {
                "at": row[1].isoformat(),
                "from": row[3],
                "to": row[4],
                "reason": row[5],
                "actor": row[6],
                "outcome": row[7],
            }
    return types


def unserved(policy: TypePolicy, served: list[str]) -> list[str]:
    """The rule queues of a type that its workers do not serve ([] while no worker of the
    type was ever seen: nothing is known yet)."""
    if not served:
        return []
    return [name for name in policy.queues if name not in served]


def load_of_queues(conn: psycopg.Connection, queues: Sequence[str]) -> dict[str, Load]:
    """Due ready and running jobs of each queue (from the small active partition)."""
    rows = conn.execute(sql.query("queue_load"), {"queues": list(queues)}).fetchall()
    return {name: Load(int(ready), int(running), float(age)) for name, ready, running, age in rows}


def load_of(conn: psycopg.Connection, policy: TypePolicy) -> dict[str, Load]:
    return load_of_queues(conn, policy.queues)
