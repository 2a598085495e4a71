"""The local platform's formation API answers like Heroku's, errors included."""

from __future__ import annotations

import io

import pytest
import requests

from pgdyno.platform import LocalPlatform

ACCEPT = "application/vnd.heroku+json; version=3"


@pytest.fixture
def platform(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text("release: true\njulia: sleep 600 # dispatcher\nwinston: sleep 600\n")
    with LocalPlatform(
        procfile, "postgresql://unused", output=io.StringIO(), kill_timeout=2
    ) as running:
        yield running


def call(platform, method, path, token=None, json=None, accept=ACCEPT):
    headers = {"Accept": accept, "Authorization": f"Bearer {token or platform.token}"}
    return requests.request(method, platform.url + path, headers=headers, json=json, timeout=5)


def test_the_dispatcher_type_starts_at_one_and_others_at_zero(platform):
    listing = call(platform, "GET", f"/apps/{platform.app}/formation").json()
    assert {f["type"]: f["quantity"] for f in listing} == {"julia": 1, "winston": 0}
    assert platform.dynos.running() == ["julia.1"]


def test_answers_carry_request_id_and_rate_limit(platform):
    response = call(platform, "GET", f"/apps/{platform.app}/formation/winston")
    assert response.status_code == 200
    assert response.headers["Request-Id"]
    assert int(response.headers["RateLimit-Remaining"]) < 4500
    body = response.json()
    assert body["type"] == "winston" and body["quantity"] == 0
    assert body["dyno_size"]["name"] == body["size"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "error_id"),
    [
        ("GET", "/apps/{app}/formation/winston", {"token": "wrong"}, 401, "unauthorized"),
        ("GET", "/apps/other/formation/winston", {}, 404, "not_found"),
        ("GET", "/apps/{app}/formation/nope", {}, 404, "not_found"),
        (
            "PATCH",
            "/apps/{app}/formation/winston",
            {"json": {"quantity": -1}},
            422,
            "invalid_params",
        ),
        (
            "PATCH",
            "/apps/{app}/formation/winston",
            {"json": {"quantity": "2"}},
            422,
            "invalid_params",
        ),
        ("PATCH", "/apps/{app}/formation/winston", {"json": {"colour": 1}}, 422, "invalid_params"),
        (
            "GET",
            "/apps/{app}/formation/winston",
            {"accept": "application/json"},
            400,
            "bad_request",
        ),
    ],
)
def test_errors_have_heroku_status_and_body(platform, method, path, kwargs, status, error_id):
    response = call(platform, method, path.format(app=platform.app), **kwargs)
    assert response.status_code == status
    assert response.json()["id"] == error_id and response.json()["message"]
    assert platform.dynos.quantities["winston"] == 0


def test_a_dyno_that_exits_on_its_own_is_restarted(tmp_path):
    procfile = tmp_path / "Procfile"
    marker = tmp_path / "starts"
    procfile.write_text(f"winston: sh -c 'echo x >> {marker}; exit 3'\n")
    from helpers import wait_until

    with LocalPlatform(
        procfile, "postgresql://unused", output=io.StringIO(), kill_timeout=2
    ) as running:
        running.dynos.scale("winston", 1)
        wait_until(
            lambda: marker.exists() and len(marker.read_text().split()) >= 2,
            timeout=10,
            message="the crashed dyno to be restarted",
        )
        names = [e[2] for e in running.events]
        assert "dyno_crashed" in names
