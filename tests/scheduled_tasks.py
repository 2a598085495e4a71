"""A module with a @pgdyno.periodic schedule, for the dispatcher's --import in tests: the
`record` task of sample_tasks, nightly at 03:00 London time."""

from __future__ import annotations

from sample_tasks import record

import pgdyno

pgdyno.periodic(
    cron="0 3 * * *",
    queue="reports",
    args={"key": "nightly"},
    timezone="Europe/London",
    name="nightly-report",
)(record)
