"""The app's own tasks: `pgdyno worker --import tasks` finds this file in the app root (the
working directory on Heroku and under `pgdyno dev`). Reports need no code: they are the
NAME.sql files in reports/."""

from __future__ import annotations

import pgdyno


@pgdyno.task("hello")
def hello(name: str = "world") -> dict[str, str]:
    """Enqueue with: INSERT INTO pgdyno.jobs (queue, task, args)
    VALUES ('reports', 'hello', '{"name": "heroku"}');"""
    return {"greeting": f"hello, {name}"}
