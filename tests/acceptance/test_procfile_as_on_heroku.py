"""Procfile lines run as Heroku runs them: through the shell as written (`cd`, `&&`, variable
assignments), in the Procfile's folder (the app root), which `--import` can import from."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from helpers import wait_until

pytestmark = pytest.mark.usefixtures("effects")

TASKS = """\
import os

import pgdyno


@pgdyno.task("myapp.where")
def where() -> dict:
    return {"cwd": os.getcwd(), "greeting": os.environ.get("GREETING")}
"""

# `pgdyno` is the console script (as on Heroku), not `python -m pgdyno`, which would put the
# working directory on sys.path by itself.
PROCFILE = """\
release: mkdir -p logs && pgdyno migrate && pwd > logs/release_cwd
julia: pgdyno dispatcher --scale q=winston,linger=0
winston: cd . && GREETING=hello pgdyno worker --queue q --import myapp.tasks
"""


def test_procfile_lines_run_through_the_shell_in_the_app_root(start_platform, conn, tmp_path):
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "tasks.py").write_text(textwrap.dedent(TASKS))
    platform = start_platform(PROCFILE)
    assert Path(tmp_path / "logs" / "release_cwd").read_text().strip() == str(tmp_path)
    wait_until(
        lambda: conn.execute("SELECT count(*) FROM pgdyno.scale_rules").fetchone()[0],
        message="the dispatcher to lead",
    )
    job_id = conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 'myapp.where') RETURNING id"
    ).fetchone()[0]
    wait_until(
        lambda: conn.execute(
            "SELECT status::text IN ('done', 'failed') FROM pgdyno.jobs WHERE id = %s", (job_id,)
        ).fetchone()[0],
        timeout=40,
        message="the job to finish",
    )
    status, result, error = conn.execute(
        "SELECT status::text, result, last_error FROM pgdyno.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert (status, error) == ("done", None), platform.output()[-3000:]
    assert result == {"cwd": str(tmp_path), "greeting": "hello"}
    assert "No module named" not in platform.output()
    assert "dyno_crashed" not in platform.output()
    wait_until(
        lambda: platform.quantity("winston") == 0 and not platform.alive("winston"),
        timeout=30,
        message="winston to scale back to zero and exit",
    )
