"""Settings: the only code that reads the environment.

Every setting resolves the same way: command-line flag, then environment variable, then the
default written here. Durations are seconds, parsed by parse_duration.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgdyno.errors import ConfigError
from pgdyno.logfmt import redact

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d|w)?\s*$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    None: 1,
}
#: The longest duration accepted anywhere (100 years): past it, datetime arithmetic overflows.
#: 100 years as PostgreSQL compares intervals (12 months of 30 days a year), so that a
#: duration this accepts also passes the schedules table's `every <= interval '100 years'`.
MAX_DURATION_S = 100 * 360 * 86400
DURATION_SYNTAX = "250ms, 30s, 5m (or 5min), 2h, 7d, 2w, or plain seconds"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """'250ms', '30s', '5m'/'5min', '2h', '7d', '2w' or a bare number of seconds -> seconds.

    The one duration syntax of pgdyno: flags, environment variables, `--scale` rules, report
    headers (`-- set: statement_timeout = 5min`), `enqueue --delay` and `report run --timeout`.
    Raises ConfigError, naming `what`, for anything else: other units, exponents, negative,
    infinite or NaN values, and durations over 100 years.
    """
    if isinstance(text, bool):
        raise ConfigError(f"{what} {text!r} is not a duration: {DURATION_SYNTAX}")
    if isinstance(text, int | float):
        seconds = float(text)
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigError(
                f"{what} {text!r} is not a duration: it must be a finite number of seconds, "
                "0 or more"
            )
    else:
        match = _DURATION.match(text) if isinstance(text, str) else None
        if not match:
            raise ConfigError(
                f"{what} {text!r} is not a duration: write a number with an optional unit "
                f"(ms, s, m or min, h, d, w), for example {DURATION_SYNTAX}"
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION_S:
        raise ConfigError(f"{what} {text!r} is too long: at most 100 years")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds -> the duration syntax parse_duration reads, in the largest unit that divides
    them ('2w', '36525d', '90s', '250ms'): `every 100 years` reads 36525d, not 3.15576e+09s.
    Fractions of a millisecond are written as plain decimal seconds ('0.0005s')."""
    millis = round(seconds * 1000)
    if millis and abs(millis / 1000 - seconds) < 1e-9:
        for unit in ("w", "d", "h", "m", "s"):
            unit_ms = int(_UNIT_SECONDS[unit] * 1000)
            if millis % unit_ms == 0:
                return f"{millis // unit_ms}{unit}"
        return f"{millis}ms"
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def parse_size(text: str | int, what: str = "size") -> int:
    """'512MB', '2GB', '1.5G', '800MiB' or a bare number of bytes -> bytes.

    Units are binary, as Heroku's dyno sizes mean them: KB = KiB = 1024 bytes, MB = MiB,
    GB = GiB. Raises ConfigError, naming `what`, for anything else, and for sizes under 1 MiB
    (too small for a Python process) or over 1 TiB.
    """
    if isinstance(text, bool):
        raise ConfigError(f"{what} {text!r} is not a size: write e.g. 512MB or 2GB")
    if isinstance(text, int):
        size = text
    else:
        match = _SIZE.match(text) if isinstance(text, str) else None
        if not match:
            raise ConfigError(
                f"{what} {text!r} is not a size: write a number with a unit (KB, MB, GB, "
                "binary: 1 MB = 1024 KB), for example 512MB or 2GB"
            )
        unit = (match.group(2) or "b").lower()[0]
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if not 2**20 <= size <= 2**40:
        raise ConfigError(f"{what} {text!r} is out of range: give 1MB to 1024GB")
    return size


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with units and defaults."""

    #: Postgres connection (DATABASE_URL). A direct connection: LISTEN and session advisory
    #: locks do not survive a transaction-mode pooler.
    database_url: str | None = field(default=None, metadata={"env": "DATABASE_URL"})
    #: This dyno's name, e.g. winston.1 (DYNO, set by Heroku and by `pgdyno dev`).
    dyno: str | None = field(default=None, metadata={"env": "DYNO"})
    #: Jobs one worker process runs at once (PGDYNO_CONCURRENCY).
    concurrency: int = 1
    #: Seconds between fallback polls when no notification arrives (PGDYNO_POLL_INTERVAL).
    poll_interval: float = 2.0
    #: Seconds a claimed job's lease lasts without renewal (PGDYNO_LEASE); heartbeats renew it
    #: every lease/3 seconds. A killed worker's job is rescued once its lease expires.
    lease: float = 30.0
    #: Seconds a stopping worker lets running jobs finish before handing them back
    #: (PGDYNO_GRACE). Under Heroku's 30 s between SIGTERM and SIGKILL.
    grace: float = 25.0
    #: First retry delay in seconds; doubles per attempt, with jitter (PGDYNO_RETRY_BASE).
    retry_base: float = 2.0
    #: Longest retry delay in seconds (PGDYNO_RETRY_MAX).
    retry_max: float = 3600.0
    #: Log level (PGDYNO_LOG_LEVEL).
    log_level: str = "INFO"
    #: Extra modules every worker imports to register tasks, comma-separated (PGDYNO_IMPORT).
    imports: str = field(default="", metadata={"env": "PGDYNO_IMPORT"})
    #: Where a worker runs its jobs (PGDYNO_POOL): "thread", in its own threads (light jobs),
    #: or "process", each job in a child process of its own (heavy jobs: memory returned when
    #: the job ends, a real timeout and memory limit, a crash takes only that job).
    pool: str = "thread"
    #: Bytes a job's process may use before it is stopped (PGDYNO_MAX_JOB_MEMORY, `2GB`),
    #: enforced with pool=process; None: 80% of the dyno's memory divided by the concurrency.
    max_job_memory: int | None = None

    # --- scaling ---------------------------------------------------------------------------
    #: Heroku Platform API base URL (HEROKU_API_URL); `pgdyno dev` points it at itself.
    heroku_api_url: str = field(
        default="https://api.heroku.com", metadata={"env": "HEROKU_API_URL"}
    )
    #: The app whose formation is scaled (HEROKU_APP_NAME).
    heroku_app_name: str | None = field(default=None, metadata={"env": "HEROKU_APP_NAME"})
    #: API token (HEROKU_API_KEY, or SPIN_DYNO_KEY as in the seed blog). Never logged.
    heroku_api_key: str | None = field(
        default=None, repr=False, metadata={"env": "HEROKU_API_KEY", "alt_env": "SPIN_DYNO_KEY"}
    )
    #: The worker's own process type (PGDYNO_PROCESS_TYPE); default: DYNO without its number.
    process_type: str | None = None
    #: Seconds a drained type lingers before it scales to zero, for rules without linger=
    #: (PGDYNO_LINGER). About one dyno boot: longer wastes money, shorter risks thrash.
    linger: float = 30.0
    #: The dispatcher's safety-net reconcile period in seconds (PGDYNO_RECONCILE_INTERVAL).
    reconcile_interval: float = 5.0
    #: Seconds the dispatcher coalesces a burst of notifications into one decision
    #: (PGDYNO_DEBOUNCE): it decides at once, then at most once per this period.
    debounce: float = 0.5

    # --- reports ---------------------------------------------------------------------------
    #: Folder of report files, NAME.sql, relative to the working directory unless absolute
    #: (PGDYNO_REPORTS_DIR). The working directory is the app root, beside the Procfile, on
    #: Heroku and under `pgdyno dev`.
    reports_dir: str = "reports"
    #: Folder where the `directory` report store writes NAME-JOB.csv.gz files
    #: (PGDYNO_REPORTS_OUTPUT_DIR). On Heroku the disk is ephemeral: prefer the default store.
    reports_output_dir: str = ".pgdyno/reports"
    #: Where reports' queries run (PGDYNO_REPORTS_DATABASE_URL): a follower, or a role with
    #: SELECT on the report tables only. Default: DATABASE_URL. Results are stored through
    #: DATABASE_URL either way.
    reports_database_url: str | None = None
    #: Where the `http` report store may upload to, comma-separated (PGDYNO_REPORTS_HTTP_ALLOW):
    #: URL prefixes naming a bucket or folder (`https://storage.googleapis.com/my-bucket/`),
    #: host names (`uploads.example.com`, `*.example.com` for its subdomains: every path on
    #: them), IP addresses or networks (`10.1.2.0/24`), which also admit those private
    #: addresses. Empty (the default): the http store is off. See pgdyno/reports/fence.py.
    reports_http_allow: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment, with non-None `overrides` (flags) taking precedence."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            name = spec.metadata.get("env", f"PGDYNO_{spec.name.upper()}")
            raw = env.get(name) or env.get(spec.metadata.get("alt_env", ""))
            if raw not in (None, ""):
                values[spec.name] = _convert(spec.name, raw, name)
        for key, value in overrides.items():
            if value is not None:
                values[key] = _convert(key, value, f"--{key.replace('_', '-')}")
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        # Checked here: logging would otherwise raise a bare ValueError from the CLI's setup.
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ConfigError(
                f"PGDYNO_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {self.log_level!r}"
            )
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.pool not in ("thread", "process"):
            raise ConfigError(f"pool must be 'thread' or 'process', got {self.pool!r}")
        for name in ("poll_interval", "lease", "retry_base", "retry_max"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.grace < 0:
            raise ConfigError(f"grace must not be negative, got {self.grace}")
        if self.linger < 0 or self.debounce < 0 or self.reconcile_interval <= 0:
            raise ConfigError(
                "linger and debounce must not be negative, and the reconcile "
                "interval must be positive"
            )

    @property
    def own_process_type(self) -> str | None:
        """This process's type: --process-type, else DYNO without its number (winston.1)."""
        if self.process_type:
            return self.process_type
        return self.dyno.rsplit(".", 1)[0] if self.dyno else None

    @property
    def import_list(self) -> list[str]:
        return [name.strip() for name in self.imports.split(",") if name.strip()]

    def require_database_url(self) -> str:
        """DATABASE_URL; ConfigError when it is missing or libpq cannot read it."""
        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set: export DATABASE_URL=postgresql://user:pass@host/db "
                "or pass --database-url (`make run` starts an embedded Postgres for you)"
            )
        return check_dsn(self.database_url)

    def __repr__(self) -> str:
        """Every field, with URL credentials and passwords replaced by ***; no API token."""
        shown = (
            f"{spec.name}={redact(repr(getattr(self, spec.name)))}"
            for spec in dataclasses.fields(self)
            if spec.repr
        )
        return f"Settings({', '.join(shown)})"


def check_dsn(dsn: str) -> str:
    """`dsn` if libpq can read it; ConfigError otherwise, never quoting it."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise unreadable_dsn(exc) from None
    return dsn


def unreadable_dsn(exc: BaseException) -> ConfigError:
    """The error for a DSN libpq cannot parse. libpq's message quotes the faulty part, which
    may be the password ('invalid percent-encoded token: "pw%ZZ..."'): quoted parts are shown
    as "***", and anything else is passed through `redact`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    percent = "percent" in text
    reason = re.sub(r'"[^"]*"', '"***"', text) if percent else redact(text)
    hint = (
        " (in a URL, write a % in the password as %25, and @ : / ? # as %40 %3A %2F %3F %23)"
        if percent
        else ""
    )
    return ConfigError(f"the database URL cannot be read: {reason}{hint}")


def _convert(name: str, raw: Any, source: str) -> Any:
    field_type = {f.name: f.type for f in dataclasses.fields(Settings)}[name]
    if name == "max_job_memory":
        return parse_size(raw, source)
    try:
        if field_type == "int":
            return int(raw)
        if field_type == "float":
            return parse_duration(raw, source)
    except ValueError:
        raise ConfigError(f"{source} must be a whole number, got {raw!r}") from None
    return raw
