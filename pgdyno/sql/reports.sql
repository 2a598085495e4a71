-- Named statements of the built-in `report` task, loaded by pgdyno/sql.py; run by
-- pgdyno/reports/. Every value is a bound parameter. The report's own query reaches COPY and
-- EXPLAIN through the QUERY placeholder of a psycopg.sql composition: it is the text of a file
-- in the reports folder, with its parameters already quoted as literals by the driver.

-- The report's connection keeps the search_path of its role (the report author's SQL is
-- written for it): pgdyno's own statements on it name pg_catalog's functions and operators.

-- name: report_set_config
-- A `-- set:` line of the report header, for this transaction only (like SET LOCAL).
SELECT pg_catalog.set_config(%(name)s, %(value)s, true);

-- name: report_check_client
-- For this transaction: the server checks every second that the report's client is still
-- connected (PostgreSQL 14+, which Heroku runs), so the query of a killed job process stops
-- within a second instead of running to its end. A report header may set it otherwise.
SELECT pg_catalog.set_config('client_connection_check_interval', '1s', true)
 WHERE pg_catalog.current_setting('server_version_num')::pg_catalog.int4 >= 140000;

-- name: report_advisory_locks
-- Advisory locks the report's session holds once its COPY is over (it took them).
SELECT pg_catalog.count(*)
  FROM pg_catalog.pg_locks
 WHERE pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
   AND locktype OPERATOR(pg_catalog.=) 'advisory';

-- name: report_explain
-- Planned, never run: proves the text is a single statement (sent with the extended protocol,
-- which refuses several) and shows whether its plan writes anything.
EXPLAIN (FORMAT JSON)
{query};

-- name: report_copy_out
-- The line break before the closing parenthesis ends any trailing line comment.
COPY (
{query}
) TO STDOUT WITH (FORMAT csv, HEADER);

-- name: report_store_begin
-- The store's transaction stays open while the report streams, and may sit idle between two
-- chunks of a slow query: a server-wide idle_in_transaction_session_timeout must not end it.
SELECT set_config('idle_in_transaction_session_timeout', '0', true);

-- name: report_run_id_next
SELECT nextval('pgdyno.report_run_id_seq');

-- name: report_chunk_insert
INSERT INTO pgdyno.report_chunks (run_id, seq, job_id, data)
VALUES (%(run_id)s, %(seq)s, %(job_id)s, %(data)s);

-- name: report_result_save
-- The newest run of a job wins: an older run finishing late (its lease had expired and the job
-- ran again) gets no row back and rolls its chunks back.
INSERT INTO pgdyno.report_results AS r
       (job_id, run_id, report, rows, csv_bytes, stored_bytes, chunks)
VALUES (%(job_id)s, %(run_id)s, %(report)s, %(rows)s, %(csv_bytes)s, %(stored_bytes)s,
        %(chunks)s)
    ON CONFLICT (job_id) DO UPDATE
   SET run_id = excluded.run_id, report = excluded.report, rows = excluded.rows,
       csv_bytes = excluded.csv_bytes, stored_bytes = excluded.stored_bytes,
       chunks = excluded.chunks, stored_at = now()
 WHERE r.run_id < excluded.run_id
RETURNING run_id;

-- name: report_chunks_delete_other_runs
DELETE FROM pgdyno.report_chunks
 WHERE job_id = %(job_id)s AND run_id <> %(run_id)s;

-- name: report_result_get
SELECT job_id, run_id, report, rows, csv_bytes, stored_bytes, chunks, stored_at
  FROM pgdyno.report_results
 WHERE job_id = %(job_id)s;

-- name: report_chunk_get
SELECT data
  FROM pgdyno.report_chunks
 WHERE run_id = %(run_id)s AND seq = %(seq)s;
