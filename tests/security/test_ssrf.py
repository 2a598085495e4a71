"""Scenario 2 of the security issue: SSRF and exfiltration through the report HTTP store.

Every worker runs the built-in `report` task, so whoever enqueues picks the upload's URL and
headers. The http store now uploads only to hosts the operator lists (PGDYNO_REPORTS_HTTP_ALLOW;
off when empty), to public addresses unless an address entry admits a private one (checked on
the names' addresses before connecting and on the socket after), never follows a redirect,
takes only a few headers from the job, and keeps the server's reply out of the job's error.
Real HTTP servers on loopback (127.0.0.1 stands for the object store the operator allows,
127.0.0.2 for a service inside the network).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_status
from psycopg.types.json import Jsonb
from reports_support import write_report
from security_support import Listener

from pgdyno.config import Settings
from pgdyno.errors import ConfigError, InvalidReport
from pgdyno.platform.postgres import free_port
from pgdyno.reports import runner

PEOPLE = (
    "SELECT n, 'Customer ' || n AS name, 'customer' || n || '@example.com' AS email"
    "  FROM generate_series(1, 2000) AS n"
)


@pytest.fixture
def store() -> Iterator[Listener]:
    with Listener("127.0.0.1") as listener:
        yield listener
        listener.shutdown()


@pytest.fixture
def internal() -> Iterator[Listener]:
    with Listener("127.0.0.2") as listener:
        yield listener
        listener.shutdown()


def test_report_uploads_reach_only_allowed_hosts_without_redirects_headers_or_replies(
    db, owner, attacker, attack, tmp_path, store, internal
):
    folder = tmp_path / "reports"
    write_report(folder, "orders_export", PEOPLE)
    store.answers["/redirect"] = (302, {"Location": f"{internal.base}/stolen"}, b"")
    store.answers["/denied"] = (403, {}, b"<Error>internal secret 7f3a</Error>")
    system = attack(
        db,
        owner,
        queues=("q", "reports"),
        PGDYNO_REPORTS_DIR=str(folder),
        PGDYNO_REPORTS_HTTP_ALLOW="127.0.0.1",
    )
    closed = f"http://127.0.0.2:{free_port()}"
    uploads = {
        "attacker": {"url": f"{internal.base}/x"},
        "closed port": {"url": f"{closed}/x"},
        "metadata": {"url": "http://169.254.169.254/latest/api/token"},
        "redirect": {"url": f"{store.base}/redirect"},
        "refused": {"url": f"{store.base}/denied"},
        "headers": {"url": f"{store.base}/ok", "headers": {"Authorization": "Bearer stolen"}},
        "allowed": {"url": f"{store.base}/ok", "headers": {"x-amz-acl": "private"}},
    }
    jobs = {}
    for name, upload in uploads.items():
        args = {"name": "orders_export", "store": "http", **upload}
        attacker.execute(
            "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('reports', 'report', %s)",
            (Jsonb(args),),
        )
        jobs[name] = owner.execute("SELECT max(id) FROM pgdyno.jobs").fetchone()[0]
    done = wait_for_status(owner, jobs.pop("allowed"), "done")
    assert done["result"]["rows"] == 2000
    errors = {
        name: wait_for_status(owner, job, "failed")["last_error"] for name, job in jobs.items()
    }
    # Inside the network: nothing reached, and an open port reads as a closed one.
    assert internal.requests == []
    assert errors["attacker"].replace(internal.base, "URL") == errors["closed port"].replace(
        closed, "URL"
    )
    assert "may not upload to '127.0.0.2'" in errors["attacker"]
    assert "may not upload to '169.254.169.254'" in errors["metadata"]
    assert "a redirect: redirects are not followed" in errors["redirect"]
    assert "HTTP 403" in errors["refused"] and "secret" not in errors["refused"]
    assert "header 'Authorization' may not be set" in errors["headers"]
    assert sorted(path for path, _ in store.requests) == ["/denied", "/ok", "/redirect"]
    assert all("authorization" not in {k.lower() for k in h} for _, h in store.requests)
    system.assert_unharmed(owner)
    system.stop()


def _run(folder: Path, database_url: str, allow: str | None, url: str) -> dict[str, Any]:
    settings = Settings(reports_dir=str(folder), **({"reports_http_allow": allow} if allow else {}))
    return runner.run(
        settings, job_id=1, database_url=database_url, name="people", store="http", url=url
    )


@pytest.fixture
def people(tmp_path: Path) -> Path:
    write_report(tmp_path, "people", PEOPLE)
    return tmp_path


def test_the_http_store_is_off_until_the_operator_allows_hosts(people, database_url, store):
    with pytest.raises(InvalidReport, match="store http is off on this worker"):
        _run(people, database_url, None, f"{store.base}/x")
    assert store.requests == []


def test_a_name_that_resolves_inside_the_network_is_not_even_dialled(people, database_url, store):
    with pytest.raises(InvalidReport, match="its address is not one reports may be uploaded to"):
        _run(people, database_url, "localhost", f"http://localhost:{store.server_address[1]}/x")
    assert store.requests == []


def test_the_address_connected_to_is_checked_too(people, database_url, store, monkeypatch):
    from pgdyno.reports.fence import HttpAllow

    # As if the name's DNS answer changed between the check and the connection (rebinding).
    monkeypatch.setattr(HttpAllow, "check_resolves", lambda *_: None)
    with pytest.raises(InvalidReport, match="its address is not one reports may be uploaded to"):
        _run(people, database_url, "localhost", f"http://localhost:{store.server_address[1]}/x")
    assert store.requests == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("fe80::1", False),
        ("100.64.0.1", False),  # shared address space (carrier-grade NAT)
        ("0.0.0.0", False),
        ("::ffff:127.0.0.1", False),  # loopback written as IPv6
        ("224.0.0.1", False),
        ("10.9.8.7", True),  # admitted by the 10.9.0.0/16 entry below
    ],
)
def test_only_public_addresses_or_those_the_operator_names_are_allowed(address, allowed):
    from pgdyno.reports.fence import HttpAllow

    fence = HttpAllow.parse("uploads.example.com, *.s3.amazonaws.com, 10.9.0.0/16")
    assert fence.address_allowed(address) is allowed
    assert ipaddress.ip_address(address)  # a valid address, whatever the answer


def test_allowed_hosts_are_names_subdomains_addresses_and_networks():
    from pgdyno.reports.fence import HttpAllow

    fence = HttpAllow.parse(" Uploads.Example.com., *.s3.amazonaws.com ,203.0.113.7,10.0.0.0/8")
    assert fence.host_allowed("uploads.example.com") and fence.host_allowed("UPLOADS.example.com")
    assert fence.host_allowed("bucket.s3.amazonaws.com")
    assert not fence.host_allowed("s3.amazonaws.com") and not fence.host_allowed("evil.com")
    assert not fence.host_allowed("uploads.example.com.evil.com")
    assert fence.host_allowed("203.0.113.7") and fence.host_allowed("10.20.30.40")
    assert not fence.host_allowed("203.0.113.8") and not fence.host_allowed("127.0.0.1")
    assert HttpAllow.parse("").empty
    for bad in ("http://x.com", "x.com/path", "*", "a b"):
        with pytest.raises(ConfigError, match="PGDYNO_REPORTS_HTTP_ALLOW"):
            HttpAllow.parse(bad)
