"""Where a report's gzipped CSV goes: Postgres (default), a directory, or an HTTP PUT.

Each store consumes the stream piece by piece and keeps one piece at most, and each one makes
a result appear whole or not at all:

- postgres: chunks in pgdyno.report_chunks and the pgdyno.report_results row that points to
  them are written in one transaction, so a failed or killed run leaves nothing behind. Each
  run has its own id; the newest run of a job wins and deletes the chunks of older runs. The
  gzipped pieces are spooled to a temporary file while COPY runs, then written on the report's
  own connection: one connection per running report, not two (the connection budget).
- directory: written to a hidden temporary file, fsynced, then renamed into place.
- http: one PUT of the whole body (chunked transfer, or Content-Length with `spool`); the
  receiving server only keeps a body that arrived complete. Only to the URLs the operator
  allows (PGDYNO_REPORTS_HTTP_ALLOW, see fence.py: off by default), never following a
  redirect, with no client headers but those of HTTP_HEADERS; a refused upload's error holds
  its status, never the server's reply.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg

from pgdyno import db, sql
from pgdyno.errors import InvalidReport, PermanentJobError, ReportFailed
from pgdyno.logfmt import log_event
from pgdyno.reports.fence import AddressRefused, HttpAllow
from pgdyno.reports.fence import session as fenced_session
from pgdyno.reports.stream import PIECE_BYTES, GzipStream
from pgdyno.reports.upload_url import UrlRefused

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

KINDS = ("postgres", "directory", "http")
#: Seconds to connect to the upload server, and to wait for each of its replies.
HTTP_TIMEOUT = (10.0, 300.0)
#: Statuses after which another attempt may succeed (timeout, rate limit, server trouble).
_HTTP_RETRYABLE = {408, 425, 429}
#: The request headers a job may add to an upload (case-insensitive): what object stores take
#: for access, storage class, metadata and how the object is served. Nothing that carries
#: credentials or changes the request (Authorization, Host, Cookie, Content-Length, ...).
HTTP_HEADERS = frozenset(
    {
        "cache-control",
        "content-disposition",
        "content-language",
        "x-amz-acl",
        "x-amz-storage-class",
        "x-amz-server-side-encryption",
        "x-amz-tagging",
        "x-goog-acl",
        "x-goog-storage-class",
        "x-ms-blob-type",
        "x-ms-access-tier",
    }
)
#: Header name prefixes a job may use: object metadata.
HTTP_HEADER_PREFIXES = ("x-amz-meta-", "x-goog-meta-", "x-ms-meta-")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,100}$")


@dataclass(frozen=True)
class Stored:
    location: str
    #: Store-specific facts recorded in the job's result (the Postgres run id).
    details: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
    kind: str

    def save(self, stream: GzipStream) -> Stored:
        """Consume `stream` and keep its bytes whole, or keep nothing and raise."""
        ...


def open_store(
    kind: Any,
    *,
    job_id: int,
    report: str,
    database_url: str,
    output_dir: Path,
    url: Any = None,
    headers: Any = None,
    spool: Any = False,
    connection: psycopg.Connection | None = None,
    shared_connection: bool = True,
    http_allow: HttpAllow | None = None,
) -> Store:
    """The store a job asked for; InvalidReport for arguments that cannot work.

    `connection`: the report's own connection, which the postgres store writes on once the
    report's COPY is over when `shared_connection` (it is a connection to `database_url`);
    otherwise the store closes it then and opens one of its own. `http_allow`: where the http
    store may upload to (nowhere: it is off)."""
    if kind not in KINDS:
        raise InvalidReport(
            f"unknown store {kind!r}: use postgres (the default), directory or http"
        )
    if kind != "http" and (url is not None or headers is not None or spool):
        raise InvalidReport(f"url, headers and spool are only used with store http, not {kind}")
    if kind == "postgres":
        return PostgresStore(database_url, job_id, report, connection, shared_connection)
    if kind == "directory":
        return DirectoryStore(output_dir, job_id, report)
    return HttpStore.checked(url, headers, spool, http_allow or HttpAllow())


class PostgresStore:
    kind = "postgres"

    def __init__(
        self,
        database_url: str,
        job_id: int,
        report: str,
        connection: psycopg.Connection | None = None,
        shared_connection: bool = True,
    ) -> None:
        self.database_url = database_url
        self.job_id = job_id
        self.report = report
        #: The report's connection, written on when it is a connection to database_url.
        self.connection = connection if shared_connection else None
        self._report_connection = connection

    def save(self, stream: GzipStream) -> Stored:
        with tempfile.TemporaryFile(prefix="pgdyno-report-") as spool:
            try:
                for piece in stream:  # runs the COPY to its end, in flat memory
                    spool.write(piece)
                spool.seek(0)
            except OSError as exc:
                raise ReportFailed(
                    f"spooling the result to a temporary file failed: {exc}"
                ) from exc
            return self._write(stream, iter(lambda: spool.read(PIECE_BYTES), b""))

    def _write(self, stream: GzipStream, pieces: Iterator[bytes]) -> Stored:
        conn = self.connection
        try:
            if conn is None:
                if self._report_connection is not None:  # the report ran elsewhere: done
                    self._report_connection.close()
                conn = db.connect(
                    self.database_url, application_name=f"pgdyno report store {self.job_id}"
                )
            else:  # the report's read-only transaction is over: write in one of our own
                conn.rollback()
                conn.read_only = False
                conn.autocommit = True
                db.pin_session(conn)  # pgdyno's statements now, not the report author's
            run_id = db.scalar(conn, sql.query("report_run_id_next"))
            chunks = 0
            with conn.transaction():
                conn.execute(sql.query("report_store_begin"))
                for piece in pieces:
                    conn.execute(
                        sql.query("report_chunk_insert"),
                        {"run_id": run_id, "seq": chunks, "job_id": self.job_id, "data": piece},
                    )
                    chunks += 1
                saved = conn.execute(
                    sql.query("report_result_save"),
                    {
                        "job_id": self.job_id,
                        "run_id": run_id,
                        "report": self.report,
                        "rows": stream.rows,
                        "csv_bytes": stream.csv_bytes,
                        "stored_bytes": stream.stored_bytes,
                        "chunks": chunks,
                    },
                ).fetchone()
                if saved is None:  # rolls the whole run back
                    raise ReportFailed(
                        f"job {self.job_id} was run again meanwhile (its lease expired), and "
                        "the newer run's result is kept"
                    )
                conn.execute(
                    sql.query("report_chunks_delete_other_runs"),
                    {"job_id": self.job_id, "run_id": run_id},
                )
        except psycopg.Error as exc:
            raise ReportFailed(
                f"storing the result in Postgres failed: {db.first_line(exc)}"
            ) from exc
        finally:
            if self.connection is None and conn is not None:
                conn.close()
        return Stored(f"pgdyno.report_results/{self.job_id}", {"run_id": run_id})


class DirectoryStore:
    kind = "directory"

    def __init__(self, folder: Path, job_id: int, report: str) -> None:
        self.folder = folder
        self.final = folder / f"{report}-{job_id}.csv.gz"

    def save(self, stream: GzipStream) -> Stored:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportFailed(f"cannot create the report folder {self.folder}: {exc}") from exc
        for stale in self.folder.glob(f".{self.final.name}.*.tmp"):  # from a killed run
            stale.unlink(missing_ok=True)
        partial = self.folder / f".{self.final.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp"
        try:
            with partial.open("wb") as handle:
                for piece in stream:
                    handle.write(piece)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, self.final)
            _fsync_folder(self.folder)
        except OSError as exc:
            raise ReportFailed(f"writing {self.final} failed: {exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
        return Stored(str(self.final.resolve()))


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (a crash right after it must not bring the old state back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def public_url(url: str) -> str:
    """The URL without its query string and fragment: a presigned URL's signature is a secret,
    kept out of logs and results."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _redact(text: str) -> str:
    """An error message with any URL query string (a signature) cut out."""
    return re.sub(r"\?[^\s'\")]*", "?<redacted>", text)


class HttpStore:
    kind = "http"

    def __init__(self, url: str, headers: dict[str, str], spool: bool, allow: HttpAllow) -> None:
        self.url = url
        self.headers = {
            **headers,
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Encoding": "gzip",
        }
        self.spool = spool
        self.allow = allow

    @classmethod
    def checked(cls, url: Any, headers: Any, spool: Any, allow: HttpAllow) -> HttpStore:
        if (
            not isinstance(url, str)
            or urlsplit(url).scheme not in ("http", "https")
            or not urlsplit(url).hostname
        ):
            raise InvalidReport(
                "store http needs a url: an http:// or https:// URL to PUT the gzipped CSV to "
                "(for example a presigned object-store URL)"
            )
        checked_headers, checked_spool = _checked_headers(headers), _checked_spool(spool)
        if allow.empty:
            raise InvalidReport(
                "store http is off on this worker: its operator lists where reports may be "
                "uploaded to in PGDYNO_REPORTS_HTTP_ALLOW"
            )
        try:
            fence = allow.for_upload(url)
        except UrlRefused as exc:
            raise InvalidReport(str(exc)) from None
        return cls(url, checked_headers, checked_spool, fence)

    def save(self, stream: GzipStream) -> Stored:
        import requests  # only workers that upload pay for importing it

        where = public_url(self.url)
        try:
            with fenced_session(self.allow) as http:
                response = self._put(http, stream)
        except AddressRefused as exc:
            log_event(log, "report_upload_refused", logging.WARNING, url=where, error=str(exc))
            raise InvalidReport(
                f"store http may not upload to {where}: its address is not one reports may be "
                "uploaded to (loopback, private and link-local addresses need an address "
                "entry in PGDYNO_REPORTS_HTTP_ALLOW)"
            ) from None
        except requests.RequestException as exc:
            if stream.error is not None:
                raise stream.error from exc
            # The operator reads the whole error in the log; the job keeps its kind only (the
            # job's row is readable by clients: no internal addresses, no server replies).
            log_event(
                log, "report_upload_failed", logging.WARNING, url=where, error=_redact(str(exc))
            )
            raise ReportFailed(f"uploading to {where} failed: {type(exc).__name__}") from exc
        status = response.status_code
        if 300 <= status < 400:
            raise PermanentJobError(
                f"the upload to {where} answered HTTP {status}, a redirect: redirects are not "
                "followed (give the final URL)"
            )
        if not 200 <= status < 300:
            message = f"the upload to {where} was refused: HTTP {status}"
            if status >= 500 or status in _HTTP_RETRYABLE:
                raise ReportFailed(message)
            raise PermanentJobError(message + " (check the URL; a presigned URL may have expired)")
        log_event(log, "report_uploaded", url=where, status=status, bytes=stream.stored_bytes)
        return Stored(where)

    def _put(self, http: requests.Session, stream: GzipStream) -> requests.Response:
        """One PUT, redirects not followed; the reply's body is never read into the job."""
        if not self.spool:
            return http.put(
                self.url,
                data=iter(stream),
                headers=self.headers,
                timeout=HTTP_TIMEOUT,
                allow_redirects=False,
            )
        # Some object stores (S3, Azure) refuse chunked uploads: spool the compressed body to a
        # temporary file (disk, not memory) and send it with its length.
        with tempfile.TemporaryFile(prefix="pgdyno-report-") as body:
            for piece in stream:
                body.write(piece)
            size = body.tell()
            body.seek(0)
            return http.put(
                self.url,
                data=body,
                headers={**self.headers, "Content-Length": str(size)},
                timeout=HTTP_TIMEOUT,
                allow_redirects=False,
            )


def _checked_headers(headers: Any) -> dict[str, str]:
    """The job's extra request headers, if every one is in HTTP_HEADERS (or has one of its
    prefixes) and holds a plain value; InvalidReport otherwise."""
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidReport(
            'headers must be a JSON object of strings, e.g. {"x-amz-acl": "private"}'
        )
    for name, value in headers.items():
        lower = name.lower()
        if not _HEADER_NAME.match(name) or not (
            lower in HTTP_HEADERS or lower.startswith(HTTP_HEADER_PREFIXES)
        ):
            raise InvalidReport(
                f"header {name[:100]!r} may not be set by a report job: allowed are "
                f"{', '.join(sorted(HTTP_HEADERS))} and {', '.join(HTTP_HEADER_PREFIXES)}*"
            )
        if len(value) > 1024 or any(char in value for char in "\r\n\x00"):
            raise InvalidReport(f"header {name!r}: a value is one line of at most 1024 characters")
    return dict(headers)


def _checked_spool(spool: Any) -> bool:
    if not isinstance(spool, bool):
        raise InvalidReport("spool must be true or false")
    return spool
