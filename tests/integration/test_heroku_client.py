"""The Heroku formation client over real HTTP against a server that follows the API contract."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fake_heroku import FakeHeroku, Scripted

from pgdyno.errors import FormationRejected, FormationUnavailable
from pgdyno.scaling.formation.heroku import HerokuFormation, retry_after_s

TOKEN = "secret-token-123"


@pytest.fixture
def heroku():
    with FakeHeroku(token=TOKEN, types={"winston": 0, "julia": 1}) as server:
        yield server


def client(server: FakeHeroku, **kwargs) -> HerokuFormation:
    return HerokuFormation(server.app, TOKEN, server.url, **kwargs)


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


def test_429_ends_the_call_at_once_with_its_retry_after_in_seconds(heroku):
    """The caller holds the type's lock: the client never sleeps nor retries (issue 12,
    scenarios 2 and 5); the Scaler records when to try again."""
    heroku.fail_next(Scripted(429, {"Retry-After": "60"}, "Your account reached the API limit."))
    started = time.monotonic()
    with pytest.raises(FormationUnavailable, match="429 rate_limit, Retry-After 60s") as info:
        client(heroku).scale("winston", 1)
    assert time.monotonic() - started < 2
    assert info.value.retry_after == 60.0
    assert len(heroku.requests) == 1 and heroku.formations["winston"]["quantity"] == 0


def test_retry_after_as_an_http_date_is_counted_from_the_answers_date(heroku):
    """Issue 12, scenario 3: `Retry-After: <HTTP-date>` was ignored (retried after 0.5 s)."""
    server_now = datetime.now(UTC) + timedelta(days=365)  # a server clock far from ours
    later = server_now + timedelta(seconds=90)
    heroku.fail_next(
        Scripted(
            429,
            {"Retry-After": format_datetime(later, usegmt=True)},
            "Your account reached the API limit.",
        )
    )
    heroku.date = format_datetime(server_now, usegmt=True)
    with pytest.raises(FormationUnavailable) as info:
        client(heroku).scale("winston", 1)
    assert info.value.retry_after == pytest.approx(90, abs=1)
    assert "Retry-After 90s" in str(info.value)


@pytest.mark.parametrize(
    ("value", "date", "expected"),
    [
        ("60", None, 60.0),
        ("0", None, 0.0),
        ("2.5", None, 2.5),
        ("-5", None, 0.0),
        ("Mon, 30 Nov 2026 19:30:14 GMT", "Mon, 30 Nov 2026 19:29:14 GMT", 60.0),
        ("Mon, 30 Nov 2026 19:30:14 GMT", "Mon, 30 Nov 2026 19:31:14 GMT", 0.0),
        ("1796065608", None, 3600.0),  # an epoch time, not a delay: capped at an hour
        ("soon", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_retry_after_forms(value, date, expected):
    assert retry_after_s(value, date) == expected


def test_503_and_connection_errors_end_the_call_without_retrying(heroku):
    heroku.fail_next(Scripted(503))
    with pytest.raises(FormationUnavailable, match="503 service_unavailable") as info:
        client(heroku).scale("winston", 1)
    assert info.value.retry_after is None
    assert len(heroku.requests) == 1


def test_unreachable_api_raises_unavailable():
    formation = HerokuFormation("my-app", TOKEN, "http://127.0.0.1:9", timeout=(0.5, 0.5))
    with pytest.raises(FormationUnavailable, match="cannot reach"):
        formation.scale("winston", 1)


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
    with pytest.raises(FormationRejected) as info:
        client(heroku).scale("winston", 1)
    assert info.value.status == status
    assert hint in str(info.value) and "nope" in str(info.value)
    assert len(heroku.requests) == 1


def test_wrong_token_gives_401_from_the_server(heroku):
    formation = HerokuFormation(heroku.app, "wrong-token", heroku.url)
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
    with pytest.raises(FormationUnavailable):
        formation.scale("winston", 1)
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
