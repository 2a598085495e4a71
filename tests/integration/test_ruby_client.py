"""Enqueue from Ruby: the README's snippets, run as written with Debian's ruby, the `pg` gem
and ActiveRecord, connected as a least-privilege enqueue role; a worker then runs the jobs.

Skipped where ruby, pg or ActiveRecord are missing, unless PGDYNO_REQUIRE_RUBY=1 (`.ci/run`
installs them and sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import helpers
import psycopg
import pytest
from helpers import REPO_DIR, wait_for_status, worker

from pgdyno.demo import shop as demo

RUBY_BLOCK = re.compile(r"```ruby\n(.*?)```", re.DOTALL)


def _ruby() -> str:
    """The ruby binary, if it can load pg and ActiveRecord; skip (or fail) otherwise."""
    ruby = shutil.which("ruby")
    problem = None
    if ruby is None:
        problem = "ruby is not installed (apt-get install ruby ruby-pg ruby-activerecord)"
    else:
        check = subprocess.run(
            [ruby, "-e", 'require "pg"; require "active_record"'], capture_output=True, text=True
        )
        if check.returncode != 0:
            problem = f"ruby cannot load pg and active_record: {check.stderr.strip()}"
    if problem is None:
        return ruby
    if os.environ.get("PGDYNO_REQUIRE_RUBY") == "1":
        pytest.fail(f"PGDYNO_REQUIRE_RUBY=1 but {problem}")
    pytest.skip(problem)


def readme_ruby() -> list[str]:
    """The ```ruby blocks of README.md, in order: the Rails initializer, the Rails call, pg."""
    blocks = RUBY_BLOCK.findall((REPO_DIR / "README.md").read_text())
    assert len(blocks) == 3, "README.md should hold three ruby snippets"
    return blocks


@pytest.fixture
def enqueue_role(conn, database_url) -> Iterator[str]:
    """An enqueue role (the README's `pgdyno grant-enqueue`); its URL."""
    with helpers.enqueue_role(conn, database_url) as url:
        yield url


def _run(ruby: str, script: str, url: str) -> str:
    """Run a Ruby script with DATABASE_URL=url (a URI, as Heroku and Rails use)."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    uri = (
        f"postgresql://{params['user']}:{params['password']}@{params['host']}:{params['port']}"
        f"/{params['dbname']}"
    )
    result = subprocess.run(
        [ruby, "-e", script],
        env={**os.environ, "DATABASE_URL": uri},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _reports(conn) -> list[tuple[int, str]]:
    return conn.execute(
        "SELECT id, args->>'name' FROM pgdyno.jobs WHERE task = 'report' ORDER BY id"
    ).fetchall()


def test_the_readme_ruby_snippets_enqueue_as_a_least_privilege_role(
    conn, database_url, enqueue_role
):
    ruby = _ruby()
    initializer, rails_call, plain_pg = readme_ruby()
    demo.seed(conn, customers=50, orders=500)

    # Rails: the app's connection (ActiveRecord, from DATABASE_URL as Rails does), the
    # initializer, then the call inside a transaction; a rolled-back transaction enqueues
    # nothing.
    rails = (
        'require "json"\nrequire "active_record"\n'
        'ActiveRecord::Base.establish_connection(ENV.fetch("DATABASE_URL"))\n'
        f"{initializer}\n"
        'ActiveRecord::Base.transaction do\n  Pgdyno.enqueue("noop", {}, queue: "reports")\n'
        "  raise ActiveRecord::Rollback\nend\n"
        f"{rails_call}\n"
        'puts "rails ok"\n'
    )
    assert _run(ruby, rails, enqueue_role) == "rails ok\n"
    assert [name for _, name in _reports(conn)] == ["orders_export"]
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 1  # no noop

    _run(ruby, plain_pg, enqueue_role)
    ids = _reports(conn)
    assert [name for _, name in ids] == ["orders_export", "top_customers"]

    # The role can enqueue and nothing else.
    with (
        psycopg.connect(enqueue_role) as limited,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        limited.execute("SELECT * FROM pgdyno.jobs")

    reports = str(demo.reports_dir())
    with worker(
        database_url, "reports", burst=True, imports=(), PGDYNO_REPORTS_DIR=reports
    ) as proc:
        assert proc.wait(60) == 0, proc.output()[-3000:]
    for job_id, name in ids:
        row = wait_for_status(conn, job_id, "done")
        assert row["result"]["report"] == name and row["result"]["rows"] > 0
