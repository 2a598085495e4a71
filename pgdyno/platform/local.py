"""LocalPlatform: a Procfile's process types run locally, behind a Heroku-compatible API.

What `pgdyno dev` and `make run` start: the release phase first, then the dispatcher's type at
quantity 1 and every other type at 0, with the Heroku environment a dyno would see (DYNO,
PORT, DATABASE_URL, HEROKU_APP_NAME, HEROKU_API_URL pointing here, HEROKU_API_KEY). Each
command runs as written through /bin/sh, in the Procfile's folder (the app root).
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from pgdyno.errors import LocalPlatformError
from pgdyno.platform import procfile
from pgdyno.platform.api import FormationServer
from pgdyno.platform.dynos import DynoManager, PlatformEvent

RELEASE = "release"


class LocalPlatform:
    def __init__(
        self,
        procfile_path: Path | str,
        database_url: str,
        *,
        port: int = 0,
        app: str = "pgdyno-local",
        kill_timeout: float = 30.0,
        output: TextIO | None = None,
        env: Mapping[str, str] | None = None,
        on_event: Callable[[PlatformEvent], None] | None = None,
        boot_time: float = 0.0,
        rate_limit: int | None = None,
        token: str | None = None,
    ) -> None:
        """`boot_time`: seconds each dyno boots before its command starts (Heroku: 20-60 s;
        default 0). `rate_limit`: the API's token pool (Heroku: 4,500, refilled hourly);
        None, the default, never answers 429. `token`: the API token the dynos (and any Heroku
        client pointed here) use; default: a random one."""
        self.commands = procfile.load(procfile_path)
        #: Where every command runs, as the app root is on Heroku: the Procfile's folder.
        self.app_root = Path(procfile_path).resolve().parent
        self.app = app
        self.token = token or secrets.token_urlsafe(24)
        self.events: list[PlatformEvent] = []
        base_env = dict(os.environ if env is None else env)
        bin_dir = str(Path(sys.executable).parent)  # so `pgdyno ...` in the Procfile resolves
        base_env["PATH"] = os.pathsep.join([bin_dir, base_env.get("PATH", "")])
        base_env["DATABASE_URL"] = database_url
        base_env["HEROKU_APP_NAME"] = app
        base_env["HEROKU_API_KEY"] = self.token
        base_env.pop("SPIN_DYNO_KEY", None)

        def record(event: PlatformEvent) -> None:
            self.events.append(event)
            if on_event is not None:
                on_event(event)

        runnable = {name: cmd for name, cmd in self.commands.items() if name != RELEASE}
        self.dynos = DynoManager(
            runnable,
            base_env,
            output=output or sys.stdout,
            kill_timeout=kill_timeout,
            on_event=record,
            cwd=str(self.app_root),
            boot_time=boot_time,
        )
        self.server = FormationServer(port, app, self.token, self.dynos)
        self.server.set_rate_limit(rate_limit)
        self.dynos.env["HEROKU_API_URL"] = self.server.url
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="formation-api", daemon=True
        )

    @property
    def url(self) -> str:
        return self.server.url

    def always_on_types(self) -> list[str]:
        """The types started at 1: those running the dispatcher."""
        return [
            name
            for name, cmd in self.commands.items()
            if name != RELEASE and "dispatcher" in cmd.split()
        ]

    def start(self) -> None:
        if RELEASE in self.commands:
            status = self.dynos.run_once(RELEASE, self.commands[RELEASE])
            if status != 0:
                raise LocalPlatformError(
                    f"the release phase ({self.commands[RELEASE]!r}) exited with status {status}"
                )
        self._thread.start()
        self.dynos.event("api_listening", url=self.server.url, app=self.app)
        for name in self.always_on_types():
            self.dynos.scale(name, 1)

    def stop(self) -> None:
        """Stop every dyno (SIGTERM, then SIGKILL after the kill timeout) and the API."""
        self.dynos.close()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LocalPlatform:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
