"""Turns Figures into the printed table, the JSON file, bench/RESULTS.md and the ratio chart.

Ratios read "times better than the best peer" whatever the unit: for a rate pgdyno / best,
for a latency or a size best / pgdyno. Above 1 pgdyno is ahead. The peers are PgQueuer and
Procrastinate; pgbench rows are the server's limit, shown for scale, never a peer.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.registry import Figure

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
SUBJECT = "pgdyno"
PEERS = ("pgqueuer", "procrastinate")
COLUMN_ORDER = ("pgdyno", "pgqueuer", "procrastinate", "reference", "pgbench-1", "pgbench-100")
TITLES = {
    "pgdyno": "pgdyno",
    "pgqueuer": "PgQueuer",
    "procrastinate": "Procrastinate",
    "reference": "reference (thin psycopg)",
    "pgbench-1": "limit: 1/tx",
    "pgbench-100": "limit: 100/stmt",
}


def ratio(figure: Figure, peer: str | None = None) -> float | None:
    """How many times better pgdyno is than `peer` (default: the best peer measured)."""
    mine = figure.values.get(SUBJECT)
    peers = [
        value
        for name, value in figure.values.items()
        if value is not None and (name == peer if peer else name in PEERS)
    ]
    if mine is None or not peers:
        return None
    if figure.better == "higher":
        return mine / max(peers)
    best = min(peers)
    return best / mine if mine > 0 else None


def goal_met(figure: Figure) -> bool | None:
    """Whether pgdyno meets every goal of the figure (None: no goal, or not measured)."""
    if not figure.goals:
        return None
    results = []
    for kind, number in figure.goals:
        if kind == "x_pgqueuer":
            times = ratio(figure, "pgqueuer")
            results.append(None if times is None else times >= number)
        elif kind.startswith("x_of:"):  # pgdyno at least `number` times another column
            mine, other = figure.values.get(SUBJECT), figure.values.get(kind[5:])
            results.append(None if mine is None or not other else mine / other >= number)
        elif kind == "max":
            mine = figure.values.get(SUBJECT)
            results.append(None if mine is None else mine < number)
    return None if None in results else all(results)


def columns(figures: Sequence[Figure]) -> list[str]:
    seen = {name for figure in figures for name in figure.values}
    return [name for name in COLUMN_ORDER if name in seen] + sorted(seen - set(COLUMN_ORDER))


def number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:.2f}"
    if unit == "MB":
        return f"{value:.1f}"
    return f"{value:,.0f}"


def rows(figures: Sequence[Figure]) -> tuple[list[str], list[list[str]]]:
    names = columns(figures)
    header = [
        "workload",
        "unit",
        *(TITLES.get(n, n) for n in names),
        "pgdyno vs best peer",
        "target (issues 5, 15)",
        "met",
    ]
    body = []
    for figure in figures:
        times = ratio(figure)
        met = goal_met(figure)
        body.append(
            [
                figure.workload,
                figure.unit,
                *(
                    number(figure.values.get(n), figure.unit) + ("*" if n in figure.notes else "")
                    for n in names
                ),
                "—" if times is None else f"{times:.2f}x",
                figure.target or "",
                {True: "yes", False: "NO", None: ""}[met],
            ]
        )
    return header, body


def text_table(figures: Sequence[Figure]) -> str:
    header, body = rows(figures)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]
    return "\n".join(out) + "\n" + notes_text(figures)


def notes_text(figures: Sequence[Figure]) -> str:
    notes = [
        f"* {TITLES.get(name, name)}, {figure.workload}: {note}"
        for figure in figures
        for name, note in figure.notes.items()
    ]
    return "\n".join(notes) + ("\n" if notes else "")


def markdown_table(figures: Sequence[Figure]) -> str:
    header, body = rows(figures)
    aligns = ["---", "---", *["---:"] * (len(header) - 4), "---", "---"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n\n" + notes_text(figures)


def chart(figures: Sequence[Figure], path: Path) -> Path | None:
    """A bar per figure: pgdyno's ratio to the best peer, with the target ratio marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [(f, ratio(f)) for f in figures if ratio(f) is not None]
    if not plotted:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(plotted) + 1.5))
    labels = [f.workload for f, _ in plotted][::-1]
    values = [r for _, r in plotted][::-1]
    colors = []
    for figure, _ in plotted[::-1]:
        met = goal_met(figure)
        colors.append({True: "#2a9d8f", False: "#e76f51", None: "#8d99ae"}[met])
    ax.barh(labels, values, color=colors)
    for index, (figure, _) in enumerate(plotted[::-1]):
        for kind, goal in figure.goals:
            if kind == "x_pgqueuer":
                ax.plot([goal, goal], [index - 0.4, index + 0.4], color="black", lw=2)
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("pgdyno vs best peer (x better; > 1: pgdyno ahead; black tick: target)")
    ax.set_title("pgdyno vs PgQueuer / Procrastinate (same server, same run)")
    for index, value in enumerate(values):
        ax.text(value, index, f" {value:.2f}x", va="center", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def to_json(figures: Sequence[Figure], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": meta,
        "figures": [
            {
                "key": f.key,
                "workload": f.workload,
                "unit": f.unit,
                "better": f.better,
                "values": f.values,
                "notes": f.notes,
                "target": f.target,
                "goals": f.goals,
                "ratio_vs_best_peer": ratio(f),
                "ratio_vs_pgqueuer": ratio(f, "pgqueuer"),
                "goal_met": goal_met(f),
                "detail": f.detail,
            }
            for f in figures
        ],
    }


def write_json(
    figures: Sequence[Figure], meta: dict[str, Any], stamp: str, latest: bool = False
) -> Path:
    """bench/results/<stamp>.json; a full run is also copied to latest.json (committed)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(json.dumps(to_json(figures, meta), indent=2, default=str) + "\n")
    if latest:
        shutil.copyfile(path, RESULTS_DIR / "latest.json")
    return path


def write_markdown(figures: Sequence[Figure], meta: dict[str, Any], method: str) -> Path:
    """bench/RESULTS.md: the latest full run's section for its server (PostgreSQL major
    version), with its table, machine, settings and chart; the other server's section, from an
    earlier run, is kept."""
    major = str(meta["postgres"].get("server_version", "?")).split(".")[0]
    png = chart(figures, RESULTS_DIR / f"ratios-pg{major}.png")
    machine = meta["machine"]
    settings = "\n".join(f"| {k} | {v} |" for k, v in meta["postgres"].items())
    systems = "\n".join(
        f"| {name} | {info['version']} | "
        + "; ".join(f"{k}: {v}" for k, v in info["settings"].items())
        + " |"
        for name, info in meta["systems"].items()
    )
    concurrent = [f for f in figures if f.key.startswith("concurrent_")]
    main = [f for f in figures if not f.key.startswith("concurrent_")]
    log = meta.get("server_log", {})
    section = f"""<!-- section pg{major} -->
## PostgreSQL {meta["postgres"].get("server_version")} ({meta.get("postgres_source", "?")})

Generated by `python -m bench{meta.get("args", "")}` on {meta["finished_at"]}; the run took
{meta["duration_s"]:.0f} s; pgdyno commit {machine.get("git_commit", "?")}, load average at start
{machine.get("load_at_start")}. Server log of the whole run: {log.get("errors")} ERROR lines,
{log.get("pgdyno_errors")} of them from pgdyno's statements.

{markdown_table(main)}
{f"![pgdyno vs best peer](results/{png.name})" if png else ""}

W5, one job per transaction from many clients at once (jobs/s; the percentage is pgdyno's
figure over `skip_notify`'s, paired by round; in brackets the mean number of sessions waiting
for the NOTIFY commit lock):

{markdown_table(concurrent)}
<details><summary>Machine, Postgres settings, systems</summary>

| | |
| --- | --- |
| CPU | {machine.get("cpu", "?")} ({machine.get("cpus")} cores) |
| memory | {machine.get("memory_mb", "?")} MB |
| OS | {machine.get("platform")} |
| Python | {machine.get("python")} |

| setting | value |
| --- | --- |
{settings}

| system | version | how it runs |
| --- | --- | --- |
{systems}

</details>
<!-- end pg{major} -->
"""
    path = BENCH_DIR / "RESULTS.md"
    sections = {f"pg{major}": section}
    if path.exists():
        old = path.read_text()
        for match in re.finditer(r"<!-- section (pg\d+) -->.*?<!-- end \1 -->\n", old, re.S):
            sections.setdefault(match.group(1), match.group(0))
    ordered = sorted(sections, key=lambda name: -int(name[2:]))
    text = f"""# pgdyno benchmark results

`make bench` writes the section of the server it ran on (the embedded PostgreSQL by default;
`make bench ARGS="--postgres-bin /usr/lib/postgresql/15/bin"` for the system's PostgreSQL 15)
and keeps the other; JSON of every run is in `bench/results/` (the latest full run in
`bench/results/latest.json`). The machine is shared with other work: compare ratios taken in
the same run rather than absolute figures across runs. What limits each figure:
`bench/PROFILE.md`.

Ratios: how many times better pgdyno is than the best peer (PgQueuer or Procrastinate);
for rates pgdyno / best, for latencies and sizes best / pgdyno. Targets are issues 5 and 15's;
the "x PgQueuer" ones are checked against PgQueuer itself.

{"".join(sections[name] + chr(10) for name in ordered)}
## How each figure is measured

{method}
"""
    path.write_text(text)
    return path
