"""The HTTP PUT store against a real local HTTP server (http.server), not a mock of requests."""

from __future__ import annotations

import gzip
import itertools
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from reports_support import psql_copy, write_report

from pgdyno.config import Settings
from pgdyno.errors import InvalidReport, PermanentJobError, ReportFailed
from pgdyno.platform.postgres import free_port
from pgdyno.reports import runner

_job_ids = itertools.count(5000)
SERIES = "SELECT g, md5(g::text) AS hash FROM generate_series(1, 200000) AS g"
SECRET = "X-Signature=s3cr3t"


class Receiver(BaseHTTPRequestHandler):
    """Keeps a PUT body only when it arrived whole, as an object store does."""

    protocol_version = "HTTP/1.1"
    server: ReceivingServer

    def do_PUT(self) -> None:
        headers = {key.lower(): value for key, value in self.headers.items()}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            length = int(headers.get("content-length", 0))
            body = self.rfile.read(length)
            body = body if len(body) == length else None
        self.server.requests.append(
            {"path": self.path, "headers": headers, "complete": body is not None}
        )
        if body is None:
            self.close_connection = True
            return
        status = self.server.status
        if status < 300:
            self.server.bodies[self.path] = body
        reply = b"stored" if status < 300 else b"<Error>AccessDenied</Error>"
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def _read_chunked(self) -> bytes | None:
        body = bytearray()
        while True:
            line = self.rfile.readline()
            if not line:
                return None  # the client went away mid-body
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(body)
            data = self.rfile.read(size)
            if len(data) < size:
                return None
            body += data
            self.rfile.readline()

    def log_message(self, *_: Any) -> None:
        pass


class ReceivingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Receiver)
        self.bodies: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.status = 200

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[ReceivingServer]:
    receiving = ReceivingServer()
    thread = threading.Thread(target=receiving.serve_forever, daemon=True)
    thread.start()
    yield receiving
    receiving.shutdown()
    receiving.server_close()


@pytest.fixture
def run_report(tmp_path: Path, database_url: str):
    folder = tmp_path / "reports"
    write_report(folder, "series", SERIES)
    write_report(
        folder,
        "fails_late",
        """
        SELECT g, md5(g::text) AS a, md5(g::text || 'x') AS b, 1 / (g - 150000) AS boom
          FROM generate_series(1, 200000) AS g
    """,
    )

    def run(name: str, **store: Any) -> dict:
        return runner.run(
            # The receiving server is on loopback: allowed by its address (fence.py).
            Settings(reports_dir=str(folder), reports_http_allow="127.0.0.1"),
            job_id=next(_job_ids),
            database_url=database_url,
            name=name,
            store="http",
            **store,
        )

    return run


def test_http_store_streams_the_gzipped_csv_in_one_chunked_put(server, run_report, database_url):
    url = f"{server.base}/bucket/series.csv.gz?{SECRET}"
    result = run_report("series", url=url, headers={"x-amz-acl": "private"})
    body = server.bodies["/bucket/series.csv.gz?" + SECRET]
    assert gzip.decompress(body) == psql_copy(database_url, SERIES)
    assert result["stored_bytes"] == len(body) > 2 * 1024 * 1024  # several pieces, streamed
    [request] = server.requests
    assert request["headers"]["transfer-encoding"] == "chunked"
    assert request["headers"]["content-encoding"] == "gzip"
    assert request["headers"]["content-type"] == "text/csv; charset=utf-8"
    assert request["headers"]["x-amz-acl"] == "private"
    # The signature is a secret: kept out of the result (and so of `report show`).
    assert result["location"] == f"{server.base}/bucket/series.csv.gz"
    assert result["store"] == "http" and result["rows"] == 200000


def test_http_store_spool_sends_a_content_length(server, run_report, database_url):
    result = run_report("series", url=f"{server.base}/spooled", spool=True)
    [request] = server.requests
    assert "transfer-encoding" not in request["headers"]
    assert int(request["headers"]["content-length"]) == result["stored_bytes"]
    assert gzip.decompress(server.bodies["/spooled"]) == psql_copy(database_url, SERIES)


def test_a_refused_upload_fails_for_good_and_keeps_the_signature_secret(server, run_report):
    server.status = 403
    with pytest.raises(PermanentJobError) as caught:
        run_report("series", url=f"{server.base}/bucket/x?{SECRET}")
    message = str(caught.value)
    assert f"the upload to {server.base}/bucket/x was refused: HTTP 403" in message
    # The server's reply stays out of the job's error, which clients read back.
    assert "AccessDenied" not in message and "s3cr3t" not in message
    assert not isinstance(caught.value, ReportFailed)


def test_a_server_error_is_worth_another_attempt(server, run_report):
    server.status = 503
    with pytest.raises(ReportFailed, match="HTTP 503"):
        run_report("series", url=f"{server.base}/busy")


def test_an_unreachable_server_is_worth_another_attempt_and_keeps_the_signature_secret(run_report):
    url = f"http://127.0.0.1:{free_port()}/bucket/x?{SECRET}"
    with pytest.raises(ReportFailed) as caught:
        run_report("series", url=url)
    assert "uploading to http://127.0.0.1:" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_a_report_failing_mid_upload_delivers_nothing_complete(server, run_report):
    with pytest.raises(InvalidReport, match="division by zero"):
        run_report("fails_late", url=f"{server.base}/partial")
    wait_until(lambda: server.requests, timeout=10, message="the server to see the upload end")
    assert server.requests[0]["complete"] is False
    assert server.bodies == {}
