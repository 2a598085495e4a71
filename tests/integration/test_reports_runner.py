"""The report task's core against a real Postgres: output identical to psql, values bound as
data, read-only enforced, Postgres errors classified, nothing half-stored."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
from pathlib import Path

import psycopg
import pytest
from reports_support import psql_copy, write_report

from pgdyno.config import Settings
from pgdyno.demo import shop as demo
from pgdyno.errors import InvalidReport, ReportFailed
from pgdyno.reports import results, runner

_job_ids = itertools.count(1000)

TYPES_REPORT = r"""
    -- Every kind of value CSV must get right.
    -- param: label text
    -- param: since date
    -- param: n integer = 3000
    SELECT g AS id,
           %(label)s || g AS label,
           CASE WHEN g %% 7 = 0 THEN NULL WHEN g %% 11 = 0 THEN ''
                WHEN g %% 13 = 0 THEN E'two\nlines, "quoted"' ELSE 'plain' END AS tricky,
           %(since)s + g AS day,
           (%(since)s + g)::timestamptz + g * interval '1 minute' AS at,
           g * 1.25 AS amount, g %% 2 = 0 AS even, 'ünïcödé ✓ \ backslash' AS text_u,
           ARRAY[g, NULL, g + 1] AS arr, jsonb_build_object('g', g, 's', 'a,"b"') AS doc,
           1.0 / 3 AS third, (g / 7.0)::float8 AS f, interval '1 day' * g AS span,
           '\.' AS end_marker
      FROM generate_series(1, %(n)s) AS g
     ORDER BY g
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "reports"


@pytest.fixture
def settings(folder: Path, tmp_path: Path) -> Settings:
    return Settings(reports_dir=str(folder), reports_output_dir=str(tmp_path / "out"))


@pytest.fixture
def run_report(settings, database_url):
    def run(name: str, params: dict | None = None, **store: object) -> dict:
        return runner.run(
            settings,
            job_id=next(_job_ids),
            database_url=database_url,
            name=name,
            params=params,
            **store,
        )

    return run


def stored(conn: psycopg.Connection, result: dict, job_id: int | None = None) -> bytes:
    """The CSV a result points to, read back as `pgdyno report fetch` does."""
    job = {
        "id": job_id or int(result["location"].rsplit("/", 1)[-1]),
        "status": "done",
        "result": result,
    }
    return b"".join(results.csv_pieces(conn, job))


def test_stored_csv_is_byte_identical_to_psql_copy(folder, run_report, conn, database_url):
    write_report(folder, "types", TYPES_REPORT)
    label = 'O\'Brien "x", row '
    result = run_report("types", {"label": label, "since": "2026-01-01"})
    reference = psql_copy(
        database_url,
        TYPES_REPORT.split("-- param: n integer = 3000")[1]
        .replace("%%", "%")
        .replace("%(label)s", "'O''Brien \"x\", row '")
        .replace("%(since)s", "'2026-01-01'::date")
        .replace("%(n)s", "3000"),
    )
    assert stored(conn, result) == reference
    assert result["rows"] == 3000
    assert result["csv_bytes"] == len(reference)
    assert b',"two\nlines, ""quoted""",' in reference  # the tricky values are there


DEMO_CASES = {  # params, and the literals psql gets in their place
    "revenue_by_month": (
        {"since": "2025-03-01", "country": "DE"},
        {"since": "'2025-03-01'::date", "country": "'DE'"},
    ),
    "top_customers": (
        {"limit": 15, "countries": ["DE", "FR"]},
        {"limit": "15", "countries": "'{DE,FR}'"},
    ),
    "orders_export": ({"since": "2025-03-01"}, {"since": "'2025-03-01'::date", "limit": "NULL"}),
}


@pytest.mark.parametrize("name", DEMO_CASES)
def test_demo_reports_are_byte_identical_to_psql(name, conn, database_url):
    demo.seed(conn, customers=300, orders=20_000)
    repo_reports = demo.reports_dir()
    params, literals = DEMO_CASES[name]
    result = runner.run(
        Settings(reports_dir=str(repo_reports)),
        job_id=next(_job_ids),
        database_url=database_url,
        name=name,
        params=params,
    )
    text = (repo_reports / f"{name}.sql").read_text()
    query = " ".join(line for line in text.splitlines() if not line.startswith("--"))
    for param, literal in literals.items():
        query = query.replace(f"%({param})s", literal)
    assert stored(conn, result) == psql_copy(database_url, query.strip().rstrip(";"))
    assert result["rows"] > 0


EVIL = [
    "'; DROP TABLE x; --",
    "\\'; DROP TABLE x; --",
    "$$; DROP TABLE x; $$",
    '")); DROP TABLE x; --',
    "%(value)s",
    "x' OR '1'='1",
]


def test_parameter_values_are_data_not_sql(folder, run_report, conn):
    conn.execute("CREATE TABLE x (name text)")
    conn.execute("INSERT INTO x SELECT unnest(%s::text[])", (EVIL,))
    write_report(
        folder,
        "lookup",
        """
        SELECT name, %(value)s AS echoed, length(%(value)s) AS length
          FROM x WHERE name = %(value)s
    """,
    )
    for value in EVIL:
        result = run_report("lookup", {"value": value})
        rows = list(csv.reader(io.StringIO(stored(conn, result).decode())))
        assert rows == [["name", "echoed", "length"], [value, value, str(len(value))]], value
    assert conn.execute("SELECT count(*) FROM x").fetchone()[0] == len(EVIL)


def test_report_settings_apply_inside_a_read_only_transaction(folder, run_report, conn):
    write_report(
        folder,
        "knobs",
        """
        -- set: work_mem = 7MB
        -- set: statement_timeout = '42s'
        -- set: lock_timeout = 1.5m   -- pgdyno's duration syntax, and a trailing comment
        SELECT current_setting('work_mem') AS work_mem,
               current_setting('statement_timeout') AS timeout,
               current_setting('lock_timeout') AS lock_timeout,
               current_setting('transaction_read_only') AS read_only
    """,
    )
    assert (
        stored(conn, run_report("knobs"))
        == b"work_mem,timeout,lock_timeout,read_only\n7MB,42s,90s,on\n"
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "WITH gone AS (DELETE FROM x RETURNING *) SELECT * FROM gone",
            "report 'w' is not read-only: its plan writes (Delete on x); a report may only read",
        ),
        (
            "SELECT nextval('s')",
            "report 'w' is not read-only: cannot execute nextval() in a read-only transaction",
        ),
        (
            "SELECT grow()",
            "report 'w' is not read-only: cannot execute INSERT in a read-only transaction",
        ),
    ],
)
def test_reports_that_write_are_refused(folder, run_report, conn, sql, message):
    conn.execute(
        "CREATE TABLE x (name text); INSERT INTO x VALUES ('kept'); CREATE SEQUENCE s;"
        "CREATE FUNCTION grow() RETURNS int LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO x VALUES ('new'); RETURN 1; END $$"
    )
    write_report(folder, "w", sql)
    with pytest.raises(InvalidReport) as caught:
        run_report("w")
    assert message in str(caught.value)
    assert conn.execute("SELECT array_agg(name) FROM x").fetchone()[0] == ["kept"]
    assert conn.execute("SELECT last_value, is_called FROM s").fetchone() == (1, False)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 1 / 0", "report 'e' failed in Postgres: division by zero (SQLSTATE 22012)"),
        ("SELECT * FROM nope", 'relation "nope" does not exist (SQLSTATE 42P01)'),
        ("SELECT 1 FROM generate_series(1, 3) AS g GROUP BY", "syntax error at end of input"),
        (
            "-- set: statement_timeout = 100ms\nSELECT pg_sleep(3)",
            "report 'e' ran out of time: canceling statement due to statement timeout;"
            " give it more",
        ),
        ("-- set: work_mem = lots\nSELECT 1", 'invalid value for parameter "work_mem": "lots"'),
    ],
)
def test_sql_errors_fail_with_the_postgres_message_and_no_retry(folder, run_report, sql, message):
    write_report(folder, "e", sql)
    with pytest.raises(InvalidReport) as caught:
        run_report("e")
    assert message in str(caught.value)


def test_a_lock_timeout_is_worth_another_attempt(folder, run_report, database_url):
    write_report(folder, "locked", "-- set: lock_timeout = 100ms\nSELECT * FROM busy")
    with psycopg.connect(database_url) as holder:
        holder.execute("CREATE TABLE busy (a int)")
        holder.commit()
        holder.execute("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(ReportFailed, match="canceling statement due to lock timeout"):
            run_report("locked")


MID_STREAM_FAILURE = """
    SELECT g, md5(g::text) AS a, md5(g::text || 'x') AS b, 1 / (g - 150000) AS boom
      FROM generate_series(1, 200000) AS g
"""


def test_a_report_failing_mid_stream_leaves_nothing_in_postgres(folder, run_report, conn):
    write_report(folder, "fails_late", MID_STREAM_FAILURE)
    with pytest.raises(InvalidReport, match="division by zero"):
        run_report("fails_late")
    assert conn.execute("SELECT count(*) FROM pgdyno.report_results").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pgdyno.report_chunks").fetchone()[0] == 0


def test_directory_store_renames_a_complete_file_into_place(
    folder, run_report, settings, database_url
):
    write_report(folder, "series", "SELECT g, g * 2 AS twice FROM generate_series(1, 5000) g")
    out = Path(settings.reports_output_dir)
    out.mkdir(parents=True)
    job_id = next(_job_ids) + 1
    stale = out / f".series-{job_id}.csv.gz.999-abc.tmp"  # as a killed run leaves it
    stale.write_bytes(b"partial")
    result = runner.run(
        settings, job_id=job_id, database_url=database_url, name="series", store="directory"
    )
    path = out / f"series-{job_id}.csv.gz"
    assert result["location"] == str(path.resolve()) and result["store"] == "directory"
    assert gzip.decompress(path.read_bytes()) == psql_copy(
        database_url, "SELECT g, g * 2 AS twice FROM generate_series(1, 5000) g"
    )
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # the stale temp file is gone


def test_directory_store_leaves_no_file_when_the_report_fails(folder, run_report, settings):
    write_report(folder, "fails_late", MID_STREAM_FAILURE)
    with pytest.raises(InvalidReport, match="division by zero"):
        run_report("fails_late", store="directory")
    assert list(Path(settings.reports_output_dir).iterdir()) == []


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"store": "s3"}, "unknown store 's3': use postgres (the default), directory or http"),
        ({"store": "http"}, "store http needs a url"),
        ({"store": "http", "url": "ftp://x/y"}, "store http needs a url"),
        ({"url": "http://x/y"}, "url, headers and spool are only used with store http"),
        ({"store": "http", "url": "http://x/y", "headers": {"a": 1}}, "headers must be a JSON"),
    ],
)
def test_bad_store_arguments_are_refused(folder, run_report, store, message):
    write_report(folder, "one", "SELECT 1")
    with pytest.raises(InvalidReport) as caught:
        run_report("one", **store)
    assert message in str(caught.value)


def test_a_slow_report_outlives_the_servers_idle_in_transaction_timeout(folder, run_report, conn):
    conn.execute(
        psycopg.sql.SQL(
            "ALTER DATABASE {} SET idle_in_transaction_session_timeout = '300ms'"
        ).format(psycopg.sql.Identifier(conn.info.dbname))
    )
    # The store's transaction waits 2 s for its first chunk: idle, from the server's view.
    write_report(
        folder, "slow", "SELECT g FROM generate_series(1, 4) g WHERE pg_sleep(0.5)::text = ''"
    )
    result = run_report("slow")
    assert stored(conn, result) == b"g\n1\n2\n3\n4\n"
