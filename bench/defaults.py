"""W6 drain at each product's defaults and at equal batch sizes (issue 15, section 3).

The W1 headline runs pgdyno at --concurrency 300 against PgQueuer at its default batch of 10.
This measures the comparisons a user would ask for, each pair in turns (pgdyno, PgQueuer,
pgdyno, ...) and ROUNDS times, the median and range of each reported:

- defaults: `pgdyno worker --queue bench` (concurrency 1, the CLI's INFO line per job) against
  PgQueuer's defaults (batch size 10);
- equal batch sizes: pgdyno --concurrency 10 and 100 against PgQueuer batch_size 10 and 100
  (log level WARNING for both, as in W1);
- the headline's settings: pgdyno --concurrency 300 against PgQueuer's default;
- the INFO line per job: pgdyno at concurrency 1 and 300, log level INFO against WARNING.

Each drain is W1's (bench/workloads.py): JOBS pre-enqueued no-op jobs, one worker process,
launch to last completion.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.registry import Figure, benchmark
from bench.runner import Context
from bench.systems.base import WorkerCommand
from bench.workloads import MeasurementFailed, drain_queue

ROUNDS = 3


@dataclass(frozen=True)
class Setting:
    """A system run with given worker flags: `concurrency` (PgQueuer: its batch size; None:
    its default) and, for pgdyno, its log level."""

    label: str
    system: str
    concurrency: int | None
    log_level: str = "WARNING"


class Configured:
    """A system whose worker() uses a Setting's flags (everything else is the system's)."""

    def __init__(self, system: Any, setting: Setting) -> None:
        self._system, self._setting = system, setting

    def __getattr__(self, name: str) -> Any:
        return getattr(self._system, name)

    def worker(self, url: str, *, drain: bool, concurrency: int | None = None) -> WorkerCommand:
        if self._setting.system == "pgdyno":
            command = self._system.worker(url, drain=drain, concurrency=self._setting.concurrency)
            return WorkerCommand(
                command.argv, {**command.env, "PGDYNO_LOG_LEVEL": self._setting.log_level}
            )
        return self._system.worker(url, drain=drain, concurrency=self._setting.concurrency)


#: (figure key, what it compares, the settings measured in turn).
COMPARISONS = [
    (
        "drain_defaults",
        "W6 drain at both defaults (pgdyno concurrency 1, INFO lines; PgQueuer batch 10)",
        [Setting("pgdyno", "pgdyno", 1, "INFO"), Setting("pgqueuer", "pgqueuer", None)],
    ),
    (
        "drain_equal_10",
        "W6 drain, equal batch 10 (pgdyno --concurrency 10; PgQueuer batch_size 10)",
        [Setting("pgdyno", "pgdyno", 10), Setting("pgqueuer", "pgqueuer", 10)],
    ),
    (
        "drain_equal_100",
        "W6 drain, equal batch 100 (pgdyno --concurrency 100; PgQueuer batch_size 100)",
        [Setting("pgdyno", "pgdyno", 100), Setting("pgqueuer", "pgqueuer", 100)],
    ),
    (
        "drain_info_1",
        "W6 drain, pgdyno concurrency 1: per-job INFO line on / off",
        [
            Setting("pgdyno", "pgdyno", 1, "INFO"),
            Setting("pgdyno WARNING", "pgdyno", 1, "WARNING"),
        ],
    ),
    (
        "drain_info_300",
        "W6 drain, pgdyno concurrency 300: per-job INFO line on / off",
        [
            Setting("pgdyno", "pgdyno", 300, "INFO"),
            Setting("pgdyno WARNING", "pgdyno", 300, "WARNING"),
        ],
    ),
]


def measure(
    ctx: Context, settings: list[Setting], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each setting `rounds` times, in turns: jobs/s (launch to last done) per round, and the
    worker's CPU µs per job (less sensitive to what else the machine runs)."""
    by_name = {system.name: system for system in ctx.systems}
    rates: dict[str, list[float]] = {setting.label: [] for setting in settings}
    cpu: dict[str, list[float]] = {setting.label: [] for setting in settings}
    for _ in range(rounds):
        for setting in settings:
            system = by_name.get(setting.system)
            if system is None:
                continue
            result = drain_queue(ctx, Configured(system, setting), 1)
            rates[setting.label].append(result["jobs_per_s"])
            cpu[setting.label].append(result["worker_cpu_s"] / result["jobs"] * 1e6)
    return (
        {label: values for label, values in rates.items() if values},
        {label: values for label, values in cpu.items() if values},
    )


@benchmark("defaults", "W6: drain at the defaults and at equal batch sizes, paired", order=15)
def defaults(ctx: Context) -> list[Figure]:
    rounds = 1 if ctx.options.drain_jobs < 20_000 else ROUNDS
    figures = []
    for key, workload, settings in COMPARISONS:
        figure = Figure(key, workload, "jobs/s", "higher")
        if key.startswith("drain_info"):
            figure.target = "INFO line ≤ 10% of the drain"
        else:
            figure.target = "≥ 2x PgQueuer"
            figure.goals = [("x_pgqueuer", 2.0)]
        try:
            rates, cpu = measure(ctx, settings, rounds)
        except MeasurementFailed as exc:
            figure.notes["pgdyno"] = f"failed: {str(exc)[:200]}"
            ctx.say(f"  {key}: FAILED {exc}")
            figures.append(figure)
            continue
        for label, values in rates.items():
            figure.values[label] = statistics.median(values)
            figure.detail[label] = {
                "rounds_jobs_per_s": [round(v) for v in values],
                "range": [round(min(values)), round(max(values))],
                "worker_cpu_us_per_job": [round(v, 1) for v in cpu[label]],
            }
        labels = list(rates)
        if len(labels) == 2:
            # Paired: each round's ratio of the first setting to the second, then the median.
            ratios = [a / b for a, b in zip(rates[labels[0]], rates[labels[1]], strict=False)]
            figure.detail["paired_ratio"] = round(statistics.median(ratios), 3)
            figure.detail["paired_ratios"] = [round(r, 3) for r in ratios]
        ctx.say(
            f"  {key}: "
            + "; ".join(
                f"{label} {statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f})"
                for label, v in rates.items()
            )
            + f"; paired ratio {figure.detail.get('paired_ratio')}; worker CPU µs/job "
            + ", ".join(f"{label} {statistics.median(v):.0f}" for label, v in cpu.items())
        )
        figures.append(figure)
    return figures
