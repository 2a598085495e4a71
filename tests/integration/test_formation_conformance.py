"""One conformance suite that every formation backend passes: the in-memory fake, the Heroku
client against a contract-following server, and the Heroku client against the local platform."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from fake_heroku import FakeHeroku
from helpers import wait_until

from pgdyno.errors import FormationRejected
from pgdyno.platform import LocalPlatform
from pgdyno.scaling.formation.base import FormationBackend
from pgdyno.scaling.formation.heroku import HerokuFormation
from pgdyno.scaling.formation.memory import MemoryFormation


@pytest.fixture(params=["memory", "heroku-contract", "local-platform"])
def backend(request, tmp_path) -> Iterator[FormationBackend]:
    if request.param == "memory":
        yield MemoryFormation({"winston": 0})
    elif request.param == "heroku-contract":
        with FakeHeroku(types={"winston": 0}) as server:
            yield HerokuFormation(server.app, server.token, server.url)
    else:
        procfile = tmp_path / "Procfile"
        procfile.write_text("winston: sleep 600\n")
        platform = LocalPlatform(
            procfile, "postgresql://unused", output=io.StringIO(), kill_timeout=2
        )
        platform.start()
        try:
            yield HerokuFormation(platform.app, platform.token, platform.url)
        finally:
            platform.stop()


def test_get_reports_the_current_quantity(backend):
    formation = backend.get("winston")
    assert (formation.process_type, formation.quantity) == ("winston", 0)


def test_scale_sets_the_quantity_and_get_reflects_it(backend):
    assert backend.scale("winston", 2).quantity == 2
    assert backend.get("winston").quantity == 2
    assert backend.scale("winston", 0).quantity == 0
    assert backend.get("winston").quantity == 0


def test_scale_to_the_same_quantity_is_idempotent(backend):
    backend.scale("winston", 1)
    assert backend.scale("winston", 1).quantity == 1


def test_scale_with_a_size_records_the_size(backend):
    # Heroku answers with the size's own spelling (Performance-L): compared case-insensitively.
    assert backend.scale("winston", 1, size="performance-l").size.lower() == "performance-l"
    assert backend.get("winston").size.lower() == "performance-l"


def test_unknown_process_type_is_rejected_with_404(backend):
    with pytest.raises(FormationRejected) as info:
        backend.scale("nope", 1)
    assert info.value.status == 404


def test_negative_quantity_is_rejected_with_422(backend):
    with pytest.raises(FormationRejected) as info:
        backend.scale("winston", -1)
    assert info.value.status == 422


def test_local_platform_runs_as_many_processes_as_the_quantity(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text("winston: sleep 600\n")
    with LocalPlatform(
        procfile, "postgresql://unused", output=io.StringIO(), kill_timeout=2
    ) as platform:
        client = HerokuFormation(platform.app, platform.token, platform.url)
        client.scale("winston", 3)
        assert platform.dynos.running("winston") == ["winston.1", "winston.2", "winston.3"]
        client.scale("winston", 1)
        assert platform.dynos.running("winston") == ["winston.1"]
        wait_until(
            lambda: platform.dynos.alive("winston") == ["winston.1"],
            message="stopped dynos to exit after SIGTERM",
        )
