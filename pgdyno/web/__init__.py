"""The dashboard: `pgdyno web`, the same WSGI app for a Python web dyno, and /metrics.

- `app.py`: `create_app(...)`, the Flask application (pages, actions, /metrics);
- `auth.py`: HTTP Basic or bearer-token authentication and the CSRF check of actions;
- `pages.py`: what each page shows, read from Postgres (statements in pgdyno/sql/web.sql);
- `timeline.py`: the scaling timeline's series (samples, scale events);
- `prometheus.py`: the /metrics collector (prometheus_client);
- `server.py`: serving it with waitress (`pgdyno web`, beside `pgdyno dev`, `make run`);
- `sampler.py`: the samples and counters the dispatcher writes (needs only psycopg);
- `summary.py`: which queues the pages, /metrics, the sampler and `pgdyno queue list` and
  `status` show one by one (those that matter, the deepest others) and the rest summed, so
  none grows with the queue names clients invent (needs only psycopg).

`pgdyno.web:app` is the application built from the environment (DATABASE_URL and
PGDYNO_WEB_PASSWORD or PGDYNO_WEB_TOKEN), for `gunicorn pgdyno.web:app` or `waitress-serve
pgdyno.web:app`. It is built on first access, so importing this package (as the dispatcher does
for its sampler) needs neither Flask nor a database.
"""

from __future__ import annotations

from typing import Any

#: The application built from the environment, on first access (see __getattr__).
app: Any


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from pgdyno.web.app import create_app

        return create_app
    if name == "app":
        from pgdyno.web.app import app_from_env

        global app
        app = app_from_env()  # built once, on first access
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
