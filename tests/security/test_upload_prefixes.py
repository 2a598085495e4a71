"""The report http store's allowlist names buckets, not only hosts.

A tester found that PGDYNO_REPORTS_HTTP_ALLOW checked only the URL's host: with
`storage.googleapis.com` (GCS URLs are path-style) or `*.s3.amazonaws.com` (which the README
suggested) allowed, anyone who can enqueue could send any report's CSV to a bucket of their own.
An entry may now be a URL prefix (scheme, host, port and whole path segments), matched on the
URL as requests and urllib3 send it; a URL that could be read two ways is refused. Real HTTP on
loopback where the upload's path matters, and botocore's presigned URLs as the witness that
the entries the README recommends admit what S3 signs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from reports_support import write_report
from security_support import Listener

from pgdyno.config import Settings
from pgdyno.errors import ConfigError, InvalidReport
from pgdyno.reports import runner
from pgdyno.reports.fence import HttpAllow
from pgdyno.reports.store import HttpStore

GCS = "https://storage.googleapis.com/my-bucket/"
S3 = "https://my-bucket.s3.amazonaws.com/reports/"
SIGNED = "?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam%2F20261201%2Fauto"
NOT_UNDER = "it is not under a URL prefix in the worker's PGDYNO_REPORTS_HTTP_ALLOW"
TWO_WAYS = "store http refuses the url"


def checked(allow: str, url: str) -> HttpStore:
    return HttpStore.checked(url, None, False, HttpAllow.parse(allow))


@pytest.mark.parametrize(
    "url",
    [
        GCS + "orders.csv.gz" + SIGNED,
        GCS + "exports/2026/12/orders%20EU.csv.gz" + SIGNED,
        "https://storage.googleapis.com:443/my-bucket/orders.csv.gz",
        "https://STORAGE.googleapis.com./my-bucket/orders.csv.gz",
        "https://storage.googleapis.com/my%2Dbucket/orders.csv.gz",  # the server decodes %2D
        S3 + "orders.csv.gz?X-Amz-Credential=AKIA%2F20261201%2Fus-east-1%2Fs3%2Faws4_request",
        S3 + "daily/orders.csv.gz",
    ],
)
def test_a_bucket_prefix_admits_the_objects_under_it(url: str) -> None:
    assert checked(f"{GCS}, {S3}", url).url == url


@pytest.mark.parametrize(
    ("url", "error"),
    [
        # The tester's two URLs.
        ("https://storage.googleapis.com/attacker-bucket/loot.csv.gz", NOT_UNDER),
        ("https://attacker-bucket.s3.amazonaws.com/reports/loot.csv.gz", "host is not in"),
        # Whole segments only, the prefix's own case, scheme and port.
        ("https://storage.googleapis.com/my-bucket-evil/loot.csv.gz", NOT_UNDER),
        ("https://storage.googleapis.com/my-bucketx/loot.csv.gz", NOT_UNDER),
        ("https://storage.googleapis.com/My-Bucket/loot.csv.gz", NOT_UNDER),
        ("https://storage.googleapis.com/my-bucket", NOT_UNDER),  # the bucket itself
        ("https://storage.googleapis.com/my-bucket/", NOT_UNDER),
        ("https://storage.googleapis.com/", NOT_UNDER),
        ("https://storage.googleapis.com", NOT_UNDER),
        ("http://storage.googleapis.com/my-bucket/loot.csv.gz", NOT_UNDER),
        ("https://storage.googleapis.com:8443/my-bucket/loot.csv.gz", NOT_UNDER),
        ("https://storage.googleapis.com#/my-bucket/loot.csv.gz", NOT_UNDER),
        ("https://storage.googleapis.com?/my-bucket/loot.csv.gz", NOT_UNDER),
        ("https://my-bucket.s3.amazonaws.com/reports-evil/loot.csv.gz", NOT_UNDER),
        ("https://my-bucket.s3.amazonaws.com/loot.csv.gz", NOT_UNDER),
        ("https://s3.amazonaws.com/my-bucket/reports/loot.csv.gz", "host is not in"),
        ("https://storage.googleapis.com@evil.example/my-bucket/loot.csv.gz", TWO_WAYS),
    ],
)
def test_a_bucket_prefix_refuses_other_buckets_folders_schemes_and_ports(
    url: str, error: str
) -> None:
    with pytest.raises(InvalidReport, match=error):
        checked(f"{GCS}, {S3}", url)


@pytest.mark.parametrize(
    "path",
    [
        "/my-bucket/../attacker-bucket/loot.csv.gz",
        "/my-bucket/%2e%2e/attacker-bucket/loot.csv.gz",
        "/my-bucket/%2E%2e/attacker-bucket/loot.csv.gz",
        "/my-bucket/.%2e/attacker-bucket/loot.csv.gz",
        "/my-bucket/%252e%252e/attacker-bucket/loot.csv.gz",  # for servers that decode twice
        "/my-bucket/%25252e%25252e/attacker-bucket/loot.csv.gz",
        "/my-bucket/..%2Fattacker-bucket/loot.csv.gz",
        "/my-bucket/x%2F..%2F..%2Fattacker-bucket/loot.csv.gz",
        "/my-bucket/x%252F..%252F..%252Fattacker-bucket/loot.csv.gz",
        "/my-bucket/..%5Cattacker-bucket/loot.csv.gz",
        "/my-bucket/..;/attacker-bucket/loot.csv.gz",  # `;` parameters, as Tomcat reads them
        "/my-bucket/./loot.csv.gz",
        "/my-bucket/loot.csv.gz%00.txt",
        "/my-bucket/..\\attacker-bucket/loot.csv.gz",
        "/my-bucket/a b.csv.gz",
        "/my-bucket/loot%zz.csv.gz",
        "/my-bucket/l\u00f6\u00f6t.csv.gz",
    ],
)
def test_traversal_and_encoding_tricks_cannot_leave_the_prefix(path: str) -> None:
    with pytest.raises(InvalidReport, match=TWO_WAYS):
        checked(GCS, "https://storage.googleapis.com" + path + SIGNED)


def test_a_backslash_cannot_send_the_upload_to_another_host() -> None:
    # urllib.parse reads the host after the '@', urllib3 (which connects) ends it at the '\':
    # the fence read storage.googleapis.com, requests connected to evil.example.
    url = "https://evil.example\\@storage.googleapis.com/my-bucket/loot.csv.gz"
    assert requests.Request("PUT", url).prepare().url.startswith("https://evil.example/")
    for allow in ("storage.googleapis.com", GCS):
        with pytest.raises(InvalidReport, match=TWO_WAYS):
            checked(allow, url)


def test_prefix_entries_are_read_strictly_and_keep_their_case() -> None:
    files = "https://Files.Example.com:8443/Reports"  # no trailing slash: the same prefix
    fence = HttpAllow.parse(f" {GCS} ,{files},uploads.example.com")
    assert not fence.empty and len(fence.prefixes) == 2
    assert not fence.host_allowed("storage.googleapis.com")  # a prefix admits no whole host
    assert checked(files, "https://files.example.com:8443/Reports/x.csv.gz")
    with pytest.raises(InvalidReport, match=NOT_UNDER):
        checked(files, "https://files.example.com:8443/reports/x.csv.gz")
    for bad in (
        "https://storage.googleapis.com",  # no path: say / for the whole host
        "https://*.s3.amazonaws.com/",
        "https://storage.googleapis.com/my-bucket/../other/",
        "https://storage.googleapis.com/my-bucket/%2e%2e/other/",
        "https://storage.googleapis.com/my-bucket/?x=1",
        "https://user:pw@storage.googleapis.com/my-bucket/",
        "ftp://storage.googleapis.com/my-bucket/",
        "https://storage.googleapis.com/my bucket/",
    ):
        with pytest.raises(ConfigError, match="PGDYNO_REPORTS_HTTP_ALLOW"):
            HttpAllow.parse(bad)


@pytest.mark.parametrize("style", ["virtual", "path"])
def test_the_readmes_s3_entries_admit_what_botocore_presigns(style: str) -> None:
    import botocore.session
    from botocore.config import Config

    s3 = botocore.session.get_session().create_client(
        "s3",
        region_name="eu-west-1",
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="not-a-secret",
        config=Config(signature_version="s3v4", s3={"addressing_style": style}),
    )
    allow = (
        "https://my-bucket.s3.eu-west-1.amazonaws.com/reports/, "
        "https://s3.eu-west-1.amazonaws.com/my-bucket/reports/"
    )

    def presigned(bucket: str, key: str) -> str:
        params = {"Bucket": bucket, "Key": key}
        return str(s3.generate_presigned_url("put_object", Params=params, ExpiresIn=600))

    odd = "reports/2026/orders EU (\u00e9t\u00e9) +=&;,$@!~'.csv.gz"
    for key in ("reports/orders.csv.gz", odd):
        url = presigned("my-bucket", key)
        assert checked(allow, url).url == url
    for bucket, key in (("attacker-bucket", "reports/loot.csv.gz"), ("my-bucket", "loot.csv.gz")):
        with pytest.raises(InvalidReport, match="may not upload to"):
            checked(allow, presigned(bucket, key))
    # A key botocore signs with a '..' segment would be sent elsewhere: refused, not followed.
    with pytest.raises(InvalidReport, match=TWO_WAYS):
        checked(allow, presigned("my-bucket", "reports/../loot.csv.gz"))


PEOPLE = "SELECT n, 'Customer ' || n AS name FROM generate_series(1, 500) AS n"


@pytest.fixture
def bucket() -> Iterator[Listener]:
    """An object store on loopback: its address is admitted by the prefix entries that name
    it, for their own uploads only."""
    with Listener("127.0.0.1") as listener:
        yield listener
        listener.shutdown()


@pytest.fixture
def upload(tmp_path: Path, database_url: str) -> Any:
    write_report(tmp_path, "people", PEOPLE)

    def run(allow: str, url: str) -> dict[str, Any]:
        settings = Settings(reports_dir=str(tmp_path), reports_http_allow=allow)
        return runner.run(
            settings, job_id=1, database_url=database_url, name="people", store="http", url=url
        )

    return run


def test_uploads_reach_only_the_bucket_the_operator_names(bucket: Listener, upload: Any) -> None:
    allow = f"{bucket.base}/my-bucket/"  # no address entry: the prefix names the address
    assert upload(allow, f"{bucket.base}/my-bucket/people.csv.gz?X-Sig=1")["rows"] == 500
    for path in (
        "/attacker-bucket/loot.csv.gz",
        "/my-bucket-evil/loot.csv.gz",
        "/my-bucket/%2e%2e/attacker-bucket/loot.csv.gz",
        "/my-bucket/..%2Fattacker-bucket/loot.csv.gz",
    ):
        with pytest.raises(InvalidReport, match=r"may not upload to|refuses the url"):
            upload(allow, bucket.base + path)
    assert [path for path, _ in bucket.requests] == ["/my-bucket/people.csv.gz?X-Sig=1"]


def test_an_encoded_dot_segment_is_refused_even_under_a_host_entry(
    bucket: Listener, upload: Any
) -> None:
    # requests decodes %2e: before, this PUT went out as /my-bucket/../attacker-bucket/...,
    # which the server (or a proxy before it) resolves to /attacker-bucket/loot.csv.gz.
    with pytest.raises(InvalidReport, match=TWO_WAYS):
        upload("127.0.0.1", f"{bucket.base}/my-bucket/%2e%2e/attacker-bucket/loot.csv.gz")
    assert bucket.requests == []


def test_a_prefix_admits_its_address_for_its_own_uploads_only(
    bucket: Listener, upload: Any
) -> None:
    port = bucket.server_address[1]
    allow = f"{bucket.base}/my-bucket/, localhost"
    # localhost is a host entry and resolves to 127.0.0.1, which only the prefix admits.
    with pytest.raises(InvalidReport, match="its address is not one reports may be uploaded"):
        upload(allow, f"http://localhost:{port}/my-bucket/loot.csv.gz")
    assert bucket.requests == []


def test_host_entries_for_shared_storage_hosts_are_named() -> None:
    fence = HttpAllow.parse(
        "*.s3.amazonaws.com, storage.googleapis.com, s3.eu-west-1.amazonaws.com, "
        "*.blob.core.windows.net, *.r2.cloudflarestorage.com, "
        f"my-bucket.s3.amazonaws.com, uploads.example.com, *.example.com, 10.0.0.0/8, {GCS}"
    )
    assert fence.shared_hosts == (
        "*.blob.core.windows.net",
        "*.r2.cloudflarestorage.com",
        "*.s3.amazonaws.com",
        "s3.eu-west-1.amazonaws.com",
        "storage.googleapis.com",
    )


def test_a_worker_warns_once_about_each_shared_storage_host_entry(
    bucket: Listener, upload: Any, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(runner, "_shared_noted", set())
    allow = f"{bucket.base}/my-bucket/, *.s3.amazonaws.com, storage.googleapis.com"
    for name in ("a", "b"):
        upload(allow, f"{bucket.base}/my-bucket/{name}.csv.gz")
    warned = [
        (record.levelname, record.logfmt["entry"])  # type: ignore[attr-defined]
        for record in caplog.records
        if record.getMessage() == "reports_http_allow_shared_host"
    ]
    assert warned == [("WARNING", "*.s3.amazonaws.com"), ("WARNING", "storage.googleapis.com")]
