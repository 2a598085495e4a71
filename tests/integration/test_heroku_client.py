"""The Heroku formation client over real HTTP against a server that follows the API contract."""

from __future__ import annotations

import logging

import pytest
from fake_heroku import FakeHeroku, Scripted

from pgdyno.errors import FormationRejected, FormationUnavailable
from pgdyno.scaling.formation.heroku import HerokuFormation

TOKEN = "secret-token-123"


@pytest.fixture
def heroku():
    with FakeHeroku(token=TOKEN, types={"winston": 0, "julia": 1}) as server:
        yield server


def client(server: FakeHeroku, **kwargs) -> HerokuFormation:
    waits: list[float] = []
    formation = HerokuFormation(server.app, TOKEN, server.url, sleep=waits.append, **kwargs)
    formation.waits = waits  # type: ignore[attr-defined]
    return formation


def test_patch_sends_exact_headers_path_and_body(heroku):
    result = client(heroku).scale("winston", 2)
    request = heroku.requests[-1]
    assert request.method == "PATCH"
    assert request.path == "/apps/my-app/formation/winston"
    assert request.headers["Accept"] == "application/vnd.heroku+json; version=3"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {"quantity": 2}
    assert result.quantity == 2 and result.process_type == "winston"
    assert result.request_id


def test_size_is_sent_as_dyno_size_name(heroku):
    result = client(heroku).scale("winston", 1, size="performance-l")
    assert heroku.requests[-1].body == {"quantity": 1, "dyno_size": {"name": "performance-l"}}
    assert result.size == "performance-l"


def test_get_reads_the_formation(heroku):
    formation = client(heroku).get("julia")
    assert (heroku.requests[-1].method, heroku.requests[-1].body) == ("GET", None)
    assert formation.quantity == 1


def test_429_with_retry_after_is_retried_and_the_scale_up_lands(heroku):
    heroku.fail_next(Scripted(429, {"Retry-After": "2"}, "Your account reached the API limit."))
    formation = client(heroku)
    assert formation.scale("winston", 1).quantity == 1
    assert [r.method for r in heroku.requests] == ["PATCH", "PATCH"]
    assert formation.waits == [2.0]  # honoured Retry-After
    assert heroku.formations["winston"]["quantity"] == 1


def test_503_and_connection_errors_are_retried_with_backoff(heroku):
    heroku.fail_next(Scripted(503), Scripted(503))
    formation = client(heroku, backoff_base=0.5, backoff_cap=8.0)
    assert formation.scale("winston", 1).quantity == 1
    assert len(heroku.requests) == 3
    assert len(formation.waits) == 2 and all(0 < w <= 8.0 for w in formation.waits)


def test_persistent_5xx_gives_up_after_max_attempts_with_unavailable(heroku):
    heroku.fail_next(*[Scripted(500)] * 5)
    with pytest.raises(FormationUnavailable, match="5 attempt"):
        client(heroku, max_attempts=5).scale("winston", 1)
    assert len(heroku.requests) == 5


def test_unreachable_api_raises_unavailable():
    formation = HerokuFormation(
        "my-app",
        TOKEN,
        "http://127.0.0.1:9",
        sleep=lambda _: None,
        max_attempts=2,
        timeout=(0.5, 0.5),
    )
    with pytest.raises(FormationUnavailable, match="cannot reach"):
        formation.scale("winston", 1)


def test_long_retry_after_ends_the_call_instead_of_holding_the_lock(heroku):
    heroku.fail_next(Scripted(429, {"Retry-After": "3600"}))
    with pytest.raises(FormationUnavailable, match="retry after 3600"):
        client(heroku).scale("winston", 1)
    assert len(heroku.requests) == 1


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "HEROKU_API_KEY"),
        (403, "operate permission"),
        (404, "HEROKU_APP_NAME"),
        (422, "--scale rule"),
    ],
)
def test_client_errors_are_not_retried_and_say_what_to_do(heroku, status, hint):
    heroku.fail_next(Scripted(status, message="nope"))
    formation = client(heroku)
    with pytest.raises(FormationRejected) as info:
        formation.scale("winston", 1)
    assert info.value.status == status
    assert hint in str(info.value) and "nope" in str(info.value)
    assert len(heroku.requests) == 1 and formation.waits == []


def test_wrong_token_gives_401_from_the_server(heroku):
    formation = HerokuFormation(heroku.app, "wrong-token", heroku.url, sleep=lambda _: None)
    with pytest.raises(FormationRejected, match="401 unauthorized"):
        formation.get("winston")


def test_unknown_app_and_type_give_404(heroku):
    with pytest.raises(FormationRejected, match="404 not_found: Couldn't find that app"):
        HerokuFormation("other-app", TOKEN, heroku.url).get("winston")
    with pytest.raises(FormationRejected, match="Couldn't find that formation"):
        client(heroku).scale("nope", 1)


def test_token_never_appears_in_logs_or_errors(heroku, caplog):
    caplog.set_level(logging.DEBUG)
    heroku.fail_next(Scripted(503), Scripted(401))
    formation = client(heroku)
    with pytest.raises(FormationRejected) as info:
        formation.scale("winston", 1)
    assert TOKEN not in str(info.value) and TOKEN not in repr(formation)
    text = "\n".join(
        record.getMessage() + str(getattr(record, "logfmt", "")) for record in caplog.records
    )
    assert "formation_api" in text and "request_id" in text
    assert TOKEN not in text


def test_each_call_logs_request_id_and_rate_limit(heroku, caplog):
    caplog.set_level(logging.INFO, logger="pgdyno")
    client(heroku).scale("winston", 1)
    fields = [r.logfmt for r in caplog.records if r.msg == "formation_api"][-1]
    assert fields["request_id"] and fields["ratelimit_remaining"] is not None
    assert fields["status"] == 200 and fields["method"] == "PATCH"
