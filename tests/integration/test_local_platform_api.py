"""The local platform's formation API answers like Heroku's, errors included."""

from __future__ import annotations

import io
import time
import uuid

import pytest
import requests
from helpers import wait_until

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
    assert int(response.headers["RateLimit-Remaining"]) == 4500  # no limit by default
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
            {"json": {"quantity": "two"}},
            422,
            "invalid_params",
        ),
        ("PATCH", "/apps/{app}/formation/winston", {"json": {"colour": 1}}, 422, "invalid_params"),
        (
            "PATCH",
            "/apps/{app}/formation/winston",
            {"json": {"quantity": 101}},
            422,
            "invalid_params",
        ),
        ("PATCH", "/apps/{app}/formation", {"json": {"updates": []}}, 422, "invalid_params"),
        ("DELETE", "/apps/{app}/formation", {}, 405, "method_not_allowed"),
        ("GET", "/apps/{app}/nope", {}, 404, "not_found"),
        ("GET", "/apps/{app}/dynos/winston.9", {}, 404, "not_found"),
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


# --- issue 12: the endpoints and shapes the real Heroku clients need -------------------------


def test_app_account_and_formation_shapes_follow_the_platform_api(platform):
    app = call(platform, "GET", f"/apps/{platform.app}").json()
    assert app["name"] == platform.app and app["id"] != platform.app
    assert uuid.UUID(app["id"]) and app["generation"]["name"] == "cedar"
    assert call(platform, "GET", f"/apps/{app['id']}").json()["name"] == platform.app
    account = call(platform, "GET", "/account").json()
    assert account["id"] == app["owner"]["id"] and "@" in account["email"]
    winston = call(platform, "GET", f"/apps/{platform.app}/formation/winston").json()
    assert winston["app"] == {"id": app["id"], "name": platform.app}
    assert winston["dyno_size"]["id"] != winston["id"]
    assert winston["dyno_size"]["name"] == winston["size"] == "Standard-1X"
    by_id = call(platform, "GET", f"/apps/{app['id']}/formation/{winston['id']}").json()
    assert by_id == winston


def test_updated_at_is_the_time_of_the_last_change_not_of_the_request(platform):
    path = f"/apps/{platform.app}/formation/winston"
    before = call(platform, "GET", path).json()["updated_at"]
    time.sleep(1.1)  # updated_at has whole seconds: a later GET must still show the same second
    assert call(platform, "GET", path).json()["updated_at"] == before
    changed = call(platform, "PATCH", path, json={"quantity": 1}).json()["updated_at"]
    assert changed > before
    call(platform, "PATCH", path, json={"quantity": 0})


def test_basic_auth_with_the_token_as_password_is_accepted(platform):
    response = requests.get(
        f"{platform.url}/apps/{platform.app}/formation",
        headers={"Accept": ACCEPT},
        auth=("", platform.token),
        timeout=5,
    )
    assert response.status_code == 200
    wrong = requests.get(
        f"{platform.url}/account", headers={"Accept": ACCEPT}, auth=("", "nope"), timeout=5
    )
    assert wrong.status_code == 401 and wrong.json()["id"] == "unauthorized"


def test_batch_update_takes_string_and_relative_quantities_and_sizes(platform):
    path = f"/apps/{platform.app}/formation"
    updates = [
        {"type": "winston", "quantity": "2", "size": "performance-l"},
        {"type": "julia", "quantity": "+1"},
    ]
    answer = call(platform, "PATCH", path, json={"updates": updates})
    assert answer.status_code == 200
    assert {f["type"]: (f["quantity"], f["size"]) for f in answer.json()} == {
        "winston": (2, "Performance-L"),
        "julia": (2, "Standard-1X"),
    }
    assert platform.dynos.running() == ["julia.1", "julia.2", "winston.1", "winston.2"]
    down = [{"type": "winston", "quantity": 0}, {"type": "julia", "quantity": "-1"}]
    assert call(platform, "PATCH", path, json={"updates": down}).status_code == 200
    assert platform.dynos.quantities == {"julia": 1, "winston": 0}


def test_an_unknown_size_gets_herokus_422_and_changes_nothing(platform):
    path = f"/apps/{platform.app}/formation"
    updates = [{"type": "winston", "quantity": 1}, {"type": "julia", "size": "bogus-size"}]
    answer = call(platform, "PATCH", path, json={"updates": updates})
    assert answer.status_code == 422
    assert answer.json() == {
        "id": "invalid_params",
        "message": answer.json()["message"],
    }
    assert answer.json()["message"].startswith("No such size as bogus-size. Available dyno sizes")
    single = call(platform, "PATCH", path + "/winston", json={"dyno_size": {"name": "1X"}})
    assert single.status_code == 422
    assert platform.dynos.quantities["winston"] == 0


def test_dynos_are_listed_restarted_and_stopped(platform):
    dynos = call(platform, "GET", f"/apps/{platform.app}/dynos").json()
    assert [(d["name"], d["type"], d["state"]) for d in dynos] == [("julia.1", "julia", "up")]
    first_pid = platform.dynos.pid("julia.1")
    assert call(platform, "DELETE", f"/apps/{platform.app}/dynos/julia.1").status_code == 202
    wait_until(
        lambda: platform.dynos.pid("julia.1") not in (None, first_pid),
        message="julia.1 to start again after its restart",
    )
    second_pid = platform.dynos.pid("julia.1")
    stop = call(platform, "POST", f"/apps/{platform.app}/formations/julia/actions/stop")
    assert stop.status_code == 202
    wait_until(
        lambda: platform.dynos.pid("julia.1") not in (None, second_pid),
        message="julia.1 to start again after ps:stop (it is part of the formation)",
    )


def test_the_token_bucket_answers_429_with_retry_after_when_spent(platform):
    platform.server.set_rate_limit(3)
    statuses = [call(platform, "GET", "/account") for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in statuses[:3]] == ["2", "1", "0"]
    assert statuses[3].json()["id"] == "rate_limit"
    assert int(statuses[3].headers["Retry-After"]) >= 1
    platform.server.set_rate_limit(None)
    assert call(platform, "GET", "/account").headers["RateLimit-Remaining"] == "4500"
