"""The local platform against Heroku clients written by others, the better witnesses: the
official Heroku CLI (npm `heroku`) drives `pgdyno dev` (ps, ps:scale up and down, ps:type,
ps:restart); heroku-client (npm) and heroku3 (PyPI) drive the same API in process.

The CLI and heroku-client are found on PATH (npm install -g heroku heroku-client; .ci/run
installs them); without them the tests are skipped, unless PGDYNO_REQUIRE_HEROKU_CLI=1 (CI),
where that is a failure. The CLI runs with a throwaway HOME, its update checks, telemetry and
analytics off, and an unreachable proxy for anything but 127.0.0.1: it talks to nothing else.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from helpers import PgdynoProcess, log_fields, wait_until
from heroku3.api import Heroku, RateLimitExceeded

from pgdyno.platform import LocalPlatform

PROCFILE = "julia: sleep 600 # dispatcher\nwinston: sleep 600\n"
APP = "pgdyno-local"


def require(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        message = f"{program} is not installed (npm install -g heroku heroku-client)"
        if os.environ.get("PGDYNO_REQUIRE_HEROKU_CLI") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def isolated_env(url: str, token: str, home: Path) -> dict[str, str]:
    """The environment of a Heroku client: the local API, nothing of the user's."""
    keep = ("PATH", "LANG", "TERM", "SYSTEMROOT")
    env = {key: value for key, value in os.environ.items() if key in keep}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_DATA_HOME=str(home / "data"),
        HEROKU_HOST=url,  # http://127.0.0.1:PORT: the CLI accepts loopback over http
        HEROKU_API_KEY=token,
        HEROKU_PARTICLEBOARD_URL=url,  # its delinquency check, else a call to heroku.com
        DISABLE_TELEMETRY="true",
        HEROKU_SKIP_ANALYTICS="1",
        HEROKU_SKIP_NEW_VERSION_CHECK="true",
        HEROKU_DISABLE_AUTOUPDATE="1",
        HTTP_PROXY="http://127.0.0.1:9",  # anything not on loopback fails at once
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        NO_COLOR="1",
        CI="true",
    )
    return env


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pgdyno-heroku-home-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LocalPlatform]:
    procfile = tmp_path / "Procfile"
    procfile.write_text(PROCFILE)
    with LocalPlatform(
        procfile, "postgresql://unused", output=io.StringIO(), kill_timeout=2, app=APP
    ) as running:
        yield running


# --- the Heroku CLI against `pgdyno dev` ------------------------------------------------------


def test_the_heroku_cli_lists_scales_resizes_and_restarts_pgdyno_dev_dynos(
    tmp_path, database_url, home
):
    cli = require("heroku")
    (tmp_path / "Procfile").write_text(PROCFILE)
    dev = PgdynoProcess(
        ["dev", "--procfile", str(tmp_path / "Procfile"), "--kill-timeout", "2s"],
        database_url,
        PGDYNO_DEV_API_TOKEN="local-token",
    )
    with dev:
        dev.wait_for_output("api_listening", timeout=30)
        url = log_fields(dev.output(), "api_listening")[0]["url"]
        # The line to paste follows the platform's first lines (printed once dev has started).
        dev.wait_for_output(f"HEROKU_HOST={url} HEROKU_API_KEY=local-token heroku ps -a {APP}")
        env = isolated_env(url, "local-token", home)

        def heroku(*commands: list[str]) -> list[str]:
            """Run CLI commands at once (each starts slowly: ~3 s of Node), in order of output."""
            procs = [
                subprocess.Popen(
                    [cli, *args, "-a", APP],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for args in commands
            ]
            outputs = []
            for args, proc in zip(commands, procs, strict=True):
                out, _ = proc.communicate(timeout=120)
                assert proc.returncode == 0, f"heroku {' '.join(args)}:\n{out}"
                outputs.append(out)
            return outputs

        def dynos() -> list[str]:
            answer = requests.get(
                f"{url}/apps/{APP}/dynos",
                headers={"Accept": "application/vnd.heroku+json; version=3"},
                auth=("", "local-token"),
                timeout=5,
            )
            return [f"{d['name']}:{d['size']}:{d['id']}" for d in answer.json()]

        (julia,) = dynos()
        listed, scaled = heroku(["ps"], ["ps:scale", "winston=2"])
        assert "=== julia (Standard-1X): sleep 600 # dispatcher (1)" in listed
        assert "julia.1: up" in listed
        assert "now running winston at 2:Standard-1X" in scaled
        resized, restarted = heroku(
            ["ps:type", "winston=performance-l"], ["ps:restart", "--process-type", "julia"]
        )
        assert "Performance-L" in resized and "winston" in resized
        assert "Restarting all julia dynos" in restarted
        wait_until(
            lambda: (
                [d.rsplit(":", 1)[0] for d in dynos()]
                == ["julia.1:Standard-1X", "winston.1:Performance-L", "winston.2:Performance-L"]
                and dynos()[0] != julia
            ),
            message="winston at 2 Performance-L dynos, julia.1 back as a new dyno",
        )
        (down,) = heroku(["ps:scale", "winston=0"])
        assert "now running winston at 0:Performance-L" in down
        assert [d.split(":")[0] for d in dynos()] == ["julia.1"]
        dev.signal(15)
        assert dev.wait() == 0


# --- heroku-client (npm) ------------------------------------------------------------------------


HEROKU_CLIENT_SCRIPT = """
const Heroku = require('heroku-client')
const heroku = new Heroku({token: process.env.TOKEN, host: process.env.URL})
async function main () {
  const app = await heroku.get('/apps/pgdyno-local')
  const updated = await heroku.patch(`/apps/${app.id}/formation`,
    {body: {updates: [{type: 'winston', quantity: '1', size: 'standard-2x'}]}})
  const dynos = await heroku.get('/apps/pgdyno-local/dynos')
  let refused = null
  try { await heroku.get('/apps/nope') } catch (err) { refused = err.statusCode }
  console.log(JSON.stringify({updated, dynos: dynos.map(d => d.name), refused}))
}
main().catch(err => { console.error(err); process.exit(1) })
"""


def test_heroku_client_scales_with_basic_auth_and_the_app_id(platform, home, tmp_path):
    node = require("node")
    require("heroku")  # installed together: npm install -g heroku heroku-client
    root = subprocess.run(["npm", "root", "-g"], capture_output=True, text=True).stdout.strip()
    if not (Path(root) / "heroku-client").is_dir():
        require("heroku-client")  # not a program: skip (or fail in CI) with the hint
    script = tmp_path / "client.js"
    script.write_text(HEROKU_CLIENT_SCRIPT)
    env = {**isolated_env(platform.url, platform.token, home), "NODE_PATH": root}
    env.update(URL=platform.url, TOKEN=platform.token)
    done = subprocess.run([node, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert [(f["type"], f["quantity"], f["size"]) for f in answer["updated"]] == [
        ("winston", 1, "Standard-2X")
    ]
    assert answer["dynos"] == ["julia.1", "winston.1"] and answer["refused"] == 404


# --- heroku3 (PyPI) -----------------------------------------------------------------------------


def test_heroku3_reads_scales_kills_and_sees_the_rate_limit(platform):
    client = Heroku()
    client._heroku_url = platform.url  # never api.heroku.com
    assert client.authenticate(platform.token) is True  # GET /account/rate-limits
    app = client.app(APP)
    assert app.name == APP and app.id != APP
    formation = {f.type: f for f in app.process_formation()}
    assert formation["winston"].quantity == 0
    assert formation["winston"].scale(2).quantity == 2  # PATCH /apps/{id}/formation/winston
    assert sorted(d.name for d in app.dynos()) == ["julia.1", "winston.1", "winston.2"]
    scaled = app.batch_scale_formation_processes({"winston": 1})
    assert [(f.type, f.quantity) for f in scaled] == [("winston", 1)]
    pid = platform.dynos.pid("julia.1")
    assert app.kill_dyno("julia.1")  # DELETE: the dyno restarts
    wait_until(lambda: platform.dynos.pid("julia.1") not in (None, pid), message="julia.1 back")
    platform.server.set_rate_limit(2)
    app.process_formation()
    assert client.ratelimit_remaining() == 1  # the RateLimit-Remaining of the last answer
    app.process_formation()
    with pytest.raises(RateLimitExceeded):
        app.process_formation()
