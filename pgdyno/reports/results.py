"""Reading report results back: what a report job did, and its CSV, decompressed as it streams.

Used by `pgdyno report show` and `pgdyno report fetch`. Like the worker, this never holds a
whole result: chunks are read one at a time and decompressed in bounded slices.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from pgdyno import queue, sql
from pgdyno.errors import NotAReportJob, ResultUnavailable

#: Most bytes of CSV produced from one slice of compressed input (CSV can compress 50:1).
SLICE_BYTES = 1024 * 1024


def report_job(conn: psycopg.Connection, job_id: int) -> dict[str, Any]:
    """The job row of report job `job_id`; JobNotFound, or NotAReportJob for another task's."""
    job = queue.get_job(conn, job_id)
    if job["task"] != "report":
        raise NotAReportJob(f"job {job_id} is a {job['task']!r} job, not a report")
    return job


def _not_done(job: dict[str, Any]) -> ResultUnavailable:
    job_id, status = job["id"], job["status"]
    if status == "ready":
        why = (
            "has not started yet (status ready): is a worker running on its queue "
            f"{job['queue']!r}?"
        )
    elif status == "running":
        rows = (job.get("progress") or {}).get("rows")
        why = "is still running" + (f" ({rows:,} rows so far)" if rows is not None else "")
    elif status == "failed":
        error = (job.get("last_error") or "").splitlines()
        why = "failed: " + (error[0] if error else "no error recorded")
    else:
        why = f"is {status}"
    return ResultUnavailable(f"report job {job_id} {why}")


def csv_pieces(conn: psycopg.Connection, job: dict[str, Any]) -> Iterator[bytes]:
    """The CSV of a done report job, decompressed, in pieces of at most SLICE_BYTES."""
    if job["status"] != "done":
        raise _not_done(job)
    result = job.get("result") or {}
    store = result.get("store")
    if store == "postgres":
        return gunzip(_chunks(conn, job["id"]))
    if store == "directory":
        return gunzip(_file_pieces(Path(result["location"])))
    if store == "http":
        raise ResultUnavailable(
            f"report job {job['id']} was uploaded to {result.get('location')}: download it "
            "from there (it is gzipped CSV)"
        )
    raise ResultUnavailable(f"report job {job['id']} has no stored result")


def _chunks(conn: psycopg.Connection, job_id: int) -> Iterator[bytes]:
    """The stored chunks in order, from one snapshot (a re-run cannot swap them midway)."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    with conn.transaction():
        row = conn.execute(sql.query("report_result_get"), {"job_id": job_id}).fetchone()
        if row is None:
            raise ResultUnavailable(
                f"report job {job_id} has no result in pgdyno.report_results (pruned?)"
            )
        run_id, chunks = row[1], row[6]
        for seq in range(chunks):
            chunk = conn.execute(
                sql.query("report_chunk_get"), {"run_id": run_id, "seq": seq}
            ).fetchone()
            if chunk is None:
                raise ResultUnavailable(
                    f"report job {job_id}: chunk {seq} of run {run_id} is missing"
                )
            yield chunk[0]


def _file_pieces(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as handle:
            while piece := handle.read(SLICE_BYTES):
                yield piece
    except FileNotFoundError:
        raise ResultUnavailable(
            f"{path} does not exist here: the directory store writes on the worker's disk, so "
            "fetch it where the worker ran"
        ) from None


def gunzip(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress gzip `pieces` without ever expanding more than SLICE_BYTES at once;
    ResultUnavailable when the stream is truncated."""
    inflater = zlib.decompressobj(wbits=31)
    for piece in pieces:
        data = piece
        while data:
            out = inflater.decompress(data, SLICE_BYTES)
            if out:
                yield out
            data = inflater.unconsumed_tail
    tail = inflater.flush()
    if tail:
        yield tail
    if not inflater.eof:
        raise ResultUnavailable("the stored result is truncated (the gzip stream does not end)")


def summary(job: dict[str, Any]) -> dict[str, Any]:
    """What `pgdyno report show` prints: the job's state and its result's figures."""
    args, result = job.get("args") or {}, job.get("result") or {}
    info: dict[str, Any] = {
        "job": job["id"],
        "report": args.get("name"),
        "params": args.get("params") or {},
        "queue": job["queue"],
        "status": job["status"],
        "attempts": job["attempts"],
        "max_attempts": job["max_attempts"],
    }
    if job["status"] == "running":
        info["progress"] = job.get("progress") or {}
    for key in (
        "rows",
        "csv_bytes",
        "stored_bytes",
        "duration_s",
        "worker_peak_rss_bytes",
        "peak_rss_scope",
        "store",
        "location",
    ):
        if key in result:
            info[key] = result[key]
    if job.get("last_error"):
        info["error"] = job["last_error"]
    return info
