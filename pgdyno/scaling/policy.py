"""Scaling policy: pure decisions from queue load and rules. No I/O, no clock reads.

The dispatcher and the workers fetch the state, call these functions, and apply the result
(see scaler.py). Keeping the policy pure makes it a table of unit tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pgdyno.config import Settings, parse_duration
from pgdyno.errors import ConfigError
from pgdyno.scaling import sizes

# The defaults of a --scale rule. The scale_rules table repeats them as its column defaults
# (sql/migrations/0002_scaling.sql), the database's own guard.
DEFAULT_MAX = 1
DEFAULT_PER = 1
#: Seconds a drained type lingers: PGDYNO_LINGER's default, the one place it is written.
DEFAULT_LINGER: float = Settings.linger
_NAME = re.compile(r"^[-\w]{1,128}$")


@dataclass(frozen=True)
class Rule:
    """`--scale QUEUE=TYPE[,max=N][,per=N][,size=NAME][,linger=SECONDS]`."""

    queue: str
    process_type: str
    max_quantity: int = DEFAULT_MAX
    jobs_per_dyno: int = DEFAULT_PER
    dyno_size: str | None = None
    linger_s: float = DEFAULT_LINGER


@dataclass(frozen=True)
class Load:
    """Jobs of one queue that want a dyno: due and ready, or running."""

    ready: int
    running: int
    oldest_ready_age_s: float = 0.0


@dataclass(frozen=True)
class TypePolicy:
    """The rules of one process type, combined (several queues may map to one type)."""

    process_type: str
    queues: tuple[str, ...]
    max_quantity: int
    dyno_size: str | None
    linger_s: float
    per_queue: Mapping[str, int]


def parse_rule(text: str, default_linger: float = DEFAULT_LINGER) -> Rule:
    """Parse one --scale value; errors say what a valid rule looks like. A size is checked
    against Heroku's dyno sizes (case-insensitive) and kept in its canonical spelling."""
    example = "for example reports=winston,max=3,per=2,size=performance-l,linger=30s"
    head, _, options = text.partition(",")
    queue, sep, process_type = head.partition("=")
    queue, process_type = queue.strip(), process_type.strip()
    if not sep or not queue or not _NAME.match(process_type):
        raise ConfigError(
            f"--scale {text!r}: write QUEUE=TYPE[,max=N][,per=N]"
            f"[,size=NAME][,linger=SECONDS], {example}"
        )
    values: dict[str, object] = {"linger_s": default_linger}
    for option in filter(None, (part.strip() for part in options.split(","))):
        key, sep, value = option.partition("=")
        if not sep or not value:
            raise ConfigError(f"--scale {text!r}: option {option!r} needs a value, {example}")
        try:
            if key == "max":
                values["max_quantity"] = _positive(int(value), "max")
            elif key == "per":
                values["jobs_per_dyno"] = _positive(int(value), "per")
            elif key == "size":
                values["dyno_size"] = value
            elif key == "linger":
                values["linger_s"] = parse_duration(value, "linger")
            else:
                raise ConfigError(
                    f"--scale {text!r}: unknown option {key!r} (known: max, per, size, linger)"
                )
        except ValueError:
            raise ConfigError(f"--scale {text!r}: {key} must be a whole number") from None
    if values.get("dyno_size"):
        size = str(values["dyno_size"])
        try:
            max_quantity = values.get("max_quantity", DEFAULT_MAX)
            assert isinstance(max_quantity, int)
            values["dyno_size"] = sizes.validate(size, max_quantity)
        except ConfigError as exc:
            raise ConfigError(f"--scale {text!r}: {exc}") from None
    return Rule(queue=queue, process_type=process_type, **values)  # type: ignore[arg-type]


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise ConfigError(f"--scale: {name} must be at least 1, got {value}")
    return value


def policies(rules: Iterable[Rule]) -> dict[str, TypePolicy]:
    """Group rules by process type. Queues of one type must agree on size."""
    by_type: dict[str, list[Rule]] = {}
    seen: set[str] = set()
    for rule in rules:
        if rule.queue in seen:
            raise ConfigError(f"queue {rule.queue!r} has two --scale rules; give one per queue")
        seen.add(rule.queue)
        by_type.setdefault(rule.process_type, []).append(rule)
    result = {}
    for process_type, group in by_type.items():
        named = {rule.dyno_size for rule in group if rule.dyno_size}
        if len(named) > 1:
            raise ConfigError(
                f"queues mapped to {process_type!r} ask for different sizes "
                f"({', '.join(sorted(named))}): a process type has one size"
            )
        result[process_type] = TypePolicy(
            process_type=process_type,
            queues=tuple(rule.queue for rule in group),
            max_quantity=max(rule.max_quantity for rule in group),
            dyno_size=named.pop() if named else None,
            linger_s=max(rule.linger_s for rule in group),
            per_queue={rule.queue: rule.jobs_per_dyno for rule in group},
        )
    return result


def wanted(policy: TypePolicy, load: Mapping[str, Load]) -> int:
    """Dynos the load justifies: min(max, ceil(jobs / per)), at least 1 while any job waits
    or runs, 0 when none does."""
    dynos = 0.0
    busy = False
    for queue in policy.queues:
        entry = load.get(queue, Load(0, 0))
        jobs = entry.ready + entry.running
        busy = busy or jobs > 0
        dynos += jobs / policy.per_queue[queue]
    if not busy:
        return 0
    return max(1, min(policy.max_quantity, math.ceil(dynos)))


def scale_up_target(
    policy: TypePolicy, load: Mapping[str, Load], current: int | None
) -> int | None:
    """The quantity the dispatcher should set, or None to leave the formation alone.

    The dispatcher only ever scales up: lowering a type to a smaller non-zero number would let
    the platform pick which dyno dies, possibly a busy one; going to zero is the workers' call.
    """
    target = wanted(policy, load)
    if target == 0 or (current is not None and target <= current):
        return None
    return target


def may_scale_to_zero(policy: TypePolicy, load: Mapping[str, Load]) -> bool:
    """A type goes to zero only when none of its queues has a job ready or running."""
    return wanted(policy, load) == 0
