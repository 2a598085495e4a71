-- pgdyno reports: the results of the built-in `report` task kept in Postgres (the default store).
--
-- A run writes its chunks and its report_results row in one transaction, so a run that fails or
-- is killed leaves nothing behind, and a result row always points to a complete set of chunks.
-- Each run has its own id (a job may run more than once: retries, a lease lost mid-run); the
-- newest run of a job wins and deletes the chunks of older runs. No foreign keys to pgdyno.jobs
-- (its primary key is (id, status)); a trigger removes results when `pgdyno prune` deletes jobs.

CREATE SEQUENCE pgdyno.report_run_id_seq;

CREATE TABLE pgdyno.report_results (
    job_id       bigint      PRIMARY KEY,
    run_id       bigint      NOT NULL UNIQUE,
    report       text        NOT NULL,
    rows         bigint      NOT NULL,
    csv_bytes    bigint      NOT NULL,
    stored_bytes bigint      NOT NULL,
    chunks       integer     NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now()
);

-- The gzipped CSV, cut in pieces of about 1 MB, in order of seq.
CREATE TABLE pgdyno.report_chunks (
    run_id bigint  NOT NULL,
    seq    integer NOT NULL,
    job_id bigint  NOT NULL,
    data   bytea   NOT NULL,
    PRIMARY KEY (run_id, seq)
);
-- gzip output does not compress again: store it out of line without trying.
ALTER TABLE pgdyno.report_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE INDEX report_chunks_job_id_idx ON pgdyno.report_chunks (job_id);

-- Fires on DELETE statements only: a job moving between the status partitions (an UPDATE)
-- keeps its result.
CREATE FUNCTION pgdyno.delete_report_results() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pgdyno.report_chunks AS c USING deleted_jobs AS d WHERE c.job_id = d.id;
    DELETE FROM pgdyno.report_results AS r USING deleted_jobs AS d WHERE r.job_id = d.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_delete_report_results
    AFTER DELETE ON pgdyno.jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pgdyno.delete_report_results();
