"""Helpers shared by the report tests: report files, psql as the reference, stored results."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import Any

import psycopg
from helpers import psql_binary

from pgdyno import queue
from pgdyno.reports import results


def psql_copy(database_url: str, query: str) -> bytes:
    """What `psql -c "\\copy (query) to stdout csv header"` writes, byte for byte."""
    one_line = " ".join(query.split("\n"))
    done = subprocess.run(
        [
            psql_binary(),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            database_url,
            "-c",
            f"\\copy ({one_line}) to stdout csv header",
        ],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def write_report(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.sql"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def fetched_csv(conn: psycopg.Connection, job_id: int) -> bytes:
    """The decompressed CSV of a done report job, as `pgdyno report fetch` gets it."""
    return b"".join(results.csv_pieces(conn, results.report_job(conn, job_id)))


def job(conn: psycopg.Connection, job_id: int) -> dict[str, Any]:
    return queue.get_job(conn, job_id)
