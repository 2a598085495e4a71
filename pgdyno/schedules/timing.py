"""When a schedule runs: a cron expression in a time zone, or a fixed period.

Cron expressions are evaluated by cronsim (the evaluator of the Healthchecks monitoring
service), which follows Debian's cron, daylight saving time included: in a zone that skips an
hour, a run set inside it happens right after the jump; in a zone that repeats an hour, a run
set inside it happens once. pgdyno only maps the @daily-style aliases and turns results into
UTC. A period (`every`) runs on a grid counted from the Unix epoch, so every dispatcher computes
the same times: every 15 minutes is :00, :15, :30 and :45 UTC, every 2 s is each even second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from pgdyno.config import format_duration, parse_duration
from pgdyno.errors import ConfigError

#: crontab(5)'s aliases, which cronsim leaves to its callers.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
CRON_SYNTAX = (
    'five fields "minute hour day-of-month month day-of-week" such as "0 3 * * *" '
    "(a sixth field in front gives seconds), or @hourly, @daily, @weekly, @monthly, @yearly"
)


@dataclass(frozen=True)
class Timing:
    """A schedule's times: `cron` read in `timezone`, or `every` (exactly one of the two)."""

    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        """Check everything once: ConfigError saying what is wrong and how to write it."""
        if (self.cron is None) == (self.every is None):
            raise ConfigError("a schedule needs either a cron expression or a period (every)")
        if self.every is not None:
            seconds = self.every.total_seconds()
            if seconds < 1:
                raise ConfigError(f"every {seconds:g}s is too short: at least 1 second")
            parse_duration(seconds, "every")  # over 100 years
        else:
            try:
                CronSim(self.expression, datetime.now(self.zone))
            except CronSimError as exc:
                raise ConfigError(
                    f"cron expression {self.cron!r} is not valid ({exc}): write {CRON_SYNTAX}"
                ) from None
        self.zone  # noqa: B018 - an unknown time zone is refused here, not at the first run

    @classmethod
    def of(cls, cron: str | None, every: str | float | timedelta | None, timezone: str) -> Timing:
        """From the CLI's or the decorator's values: `every` as a duration ('2s', '15m', 90)."""
        if every is not None and not isinstance(every, timedelta):
            every = timedelta(seconds=parse_duration(every, "every"))
        return cls(cron=cron, every=every, timezone=timezone)

    @property
    def expression(self) -> str:
        """The cron expression, aliases spelled out."""
        text = (self.cron or "").strip()
        return ALIASES.get(text.lower(), text)

    @cached_property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise ConfigError(
                f"unknown time zone {self.timezone!r}: give an IANA name such as "
                "Europe/London or America/New_York (the time zone database comes with the "
                "system, or with `pip install tzdata`)"
            ) from None

    def describe(self) -> str:
        if self.every is not None:
            return f"every {format_duration(self.every.total_seconds())}"
        zone = "" if self.timezone == "UTC" else f" ({self.timezone})"
        return f"cron {self.cron}{zone}"

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after `moment` (aware), in UTC."""
        if self.every is not None:
            return EPOCH + ((moment - EPOCH) // self.every + 1) * self.every
        try:
            found = next(CronSim(self.expression, moment.astimezone(self.zone)))
        except StopIteration:  # no match within 50 years (30 February)
            raise ConfigError(f"cron expression {self.cron!r} never matches a date") from None
        return found.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last scheduled time at or before `moment` (aware), in UTC; None if none."""
        if self.every is not None:
            return EPOCH + ((moment - EPOCH) // self.every) * self.every
        # cronsim's reverse iteration starts strictly before its start: one microsecond later
        # makes `moment` itself a candidate.
        start = (moment + _MICROSECOND).astimezone(self.zone)
        try:
            return next(CronSim(self.expression, start, reverse=True)).astimezone(UTC)
        except StopIteration:
            return None
