"""`make run`: the queue end to end on the embedded Postgres, for a first look.

Starts the embedded server (kept in .pgdyno/ between runs), migrates, enqueues demo jobs with
the CLI and with psql (a client that knows nothing of pgdyno), drains them with a burst worker
and shows `pgdyno status`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pgdyno
from pgdyno.embedded import EmbeddedPostgres


@pgdyno.task("demo.greet")
def greet(name: str, pause: float = 0.2) -> dict[str, str]:
    """A stand-in for real work: wait a little, return a greeting (stored as the result)."""
    time.sleep(pause)
    return {"greeting": f"hello, {name}"}


def _run(*args: str, env: dict[str, str]) -> str:
    print(f"$ {' '.join(args)}", flush=True)
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    print(out.stdout, end="", flush=True)
    return out.stdout


def main() -> int:
    server = EmbeddedPostgres(Path(".pgdyno") / "postgres")
    url = server.start()
    env = {**os.environ, "DATABASE_URL": url}
    pgdyno_cli = str(Path(sys.executable).with_name("pgdyno"))
    _run(pgdyno_cli, "migrate", env=env)
    for name in ("julia", "winston"):
        _run(pgdyno_cli, "enqueue", "demo.greet", "--queue", "demo",
             "--args", f'{{"name": "{name}"}}', env=env)
    _run(server.binary("psql"), url, "-c",
         "INSERT INTO pgdyno.jobs (queue, task, args) "
         "VALUES ('demo', 'demo.greet', '{\"name\": \"psql\"}') RETURNING id", env=env)
    _run(pgdyno_cli, "worker", "--queue", "demo", "--import", "pgdyno.demo", "--burst",
         "--concurrency", "2", env=env)
    _run(pgdyno_cli, "status", env=env)
    print(f"\nThe embedded Postgres keeps running at {url} (data in .pgdyno/); "
          f"stop it with: make stop", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
