"""`pgdyno report list|run|show|fetch`: named reports, run by the worker's `report` task.

`report run --wait` follows the job: on a terminal with a progress bar drawn by tqdm (rows
streamed, their rate, the time elapsed), elsewhere (a pipe, a CI log) with a plain line each
time the figures change.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import click
from tqdm import tqdm

from pgdyno import queue
from pgdyno.cli.common import DURATION, connection, database_option, echo_json
from pgdyno.config import Settings
from pgdyno.enqueue import enqueue as enqueue_job
from pgdyno.enqueue import enqueue_unique
from pgdyno.errors import InvalidReport
from pgdyno.reports import catalog, results
from pgdyno.reports.store import KINDS

#: Seconds between two looks at a job while `report run --wait` waits.
WAIT_POLL = 0.5


def _size(count: Any) -> str:
    """1234567 -> '1.2 MiB': binary units, as the worker's logs (peak_rss_mib) use."""
    if count is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} B"


def _folder() -> Path:
    return Path(Settings.from_env().reports_dir)


@click.group()
def report() -> None:
    """Named reports: NAME.sql files in the reports folder ($PGDYNO_REPORTS_DIR)."""


@report.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(as_json: bool) -> None:
    """The reports in the reports folder and the parameters each takes."""
    folder = _folder()
    entries: list[dict[str, Any]] = []
    for name in catalog.names(folder):
        try:
            found = catalog.load(folder, name)
        except InvalidReport as exc:
            entries.append({"name": name, "error": str(exc)})
            continue
        entries.append(
            {
                "name": name,
                "description": found.description,
                "params": [
                    {
                        "name": p.name,
                        "type": p.type,
                        "required": p.required,
                        **({} if p.required else {"default": p.default}),
                    }
                    for p in found.params
                ],
                "params_text": ", ".join(p.describe() for p in found.params),
                "settings": dict(found.settings),
            }
        )
    if as_json:
        echo_json({"folder": str(folder.resolve()), "reports": entries})
        return
    if not entries:
        click.echo(
            f"no reports in {folder.resolve()} (add NAME.sql files, or set PGDYNO_REPORTS_DIR)"
        )
        return
    for entry in entries:
        if "error" in entry:
            click.echo(f"{entry['name']}  (broken: {entry['error']})")
            continue
        click.echo(f"{entry['name']}({entry['params_text']})")
        if entry["description"]:
            click.echo(f"    {entry['description']}")


def _params(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in values:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE, e.g. since=2026-01-01")
        if key.strip() in parsed:
            raise click.BadParameter(f"parameter {key.strip()!r} is given twice")
        parsed[key.strip()] = value
    return parsed


def _headers(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in values:
        key, colon, value = item.partition(":")
        if not colon or not key.strip():
            raise click.BadParameter(f"{item!r} is not 'Name: value'")
        parsed[key.strip()] = value.strip()
    return parsed


@report.command()
@click.argument("name")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    callback=_params,
    metavar="NAME=VALUE",
    help="A report parameter (repeatable).",
)
@click.option("--queue", "-q", "queue_name", default="reports", show_default=True)
@click.option(
    "--store",
    type=click.Choice(KINDS),
    default="postgres",
    show_default=True,
    help="Where the gzipped CSV goes.",
)
@click.option("--url", default=None, help="With --store http: the URL to PUT the result to.")
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=_headers,
    metavar="'NAME: VALUE'",
    help="With --store http: a request header (repeatable).",
)
@click.option(
    "--spool",
    is_flag=True,
    help="With --store http: send with Content-Length (S3, Azure), via a temp file.",
)
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--wait", is_flag=True, help="Show progress until the job ends; exit 1 if it fails.")
@click.option(
    "--timeout",
    type=DURATION,
    default=None,
    help="With --wait: give up waiting after this long, e.g. 90s or 10m (exit 1).",
)
@click.option(
    "--no-check",
    is_flag=True,
    help="Enqueue without checking NAME and parameters against the local reports.",
)
@click.option(
    "--unique",
    is_flag=True,
    help="While the same report with the same parameters is ready or running in the queue, "
    "follow that job instead of adding one.",
)
@database_option
def run(
    name: str,
    params: dict[str, str],
    queue_name: str,
    store: str,
    url: str | None,
    headers: dict[str, str],
    spool: bool,
    priority: int,
    wait: bool,
    timeout: float | None,
    no_check: bool,
    unique: bool,
    database_url: str | None,
) -> None:
    """Enqueue report NAME (print the job id); with --wait, follow it to the end."""
    if store == "http" and not url:
        raise click.UsageError("--store http needs --url (where to PUT the gzipped CSV)")
    if store != "http" and (url or headers or spool):
        raise click.UsageError("--url, --header and --spool go with --store http")
    folder = _folder()
    if not no_check:
        if folder.is_dir():
            try:
                catalog.load(folder, name).bind(params)
            except InvalidReport as exc:
                raise click.UsageError(f"{exc} (or pass --no-check)") from None
        else:
            click.echo(
                f"note: {folder.resolve()} does not exist here, so {name!r} and its "
                "parameters are checked by the worker only",
                err=True,
            )
    args: dict[str, Any] = {"name": name, "params": params}
    if store != "postgres":
        args["store"] = store
    if url is not None:
        args["url"] = url
    if headers:
        args["headers"] = headers
    if spool:
        args["spool"] = True
    with connection(database_url) as conn:
        if unique:
            key = natural_key(name, params)
            job_id, added = enqueue_unique(
                conn, "report", args, unique_key=key, queue=queue_name, priority=priority
            )
            if not added:
                click.echo(
                    f"report {name} with these parameters is already ready or running as job "
                    f"{job_id}: no job added",
                    err=True,
                )
        else:
            job_id = enqueue_job(conn, "report", args, queue=queue_name, priority=priority)
        click.echo(job_id)
        if wait:
            _follow(conn, job_id, timeout)


def natural_key(name: str, params: dict[str, str]) -> str:
    """The unique_key of `report run --unique`: the report and its parameters as given."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return f"report:{name}:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


class _Display(Protocol):
    def show(self, job: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class _Lines:
    """Not a terminal: a plain line on stderr each time the figures change."""

    def __init__(self) -> None:
        self._shown = ""

    def show(self, job: dict[str, Any]) -> None:
        line = _progress_line(job)
        if line != self._shown:
            click.echo(line, err=True)
            self._shown = line

    def close(self) -> None:
        pass


class _Bar:
    """A terminal: tqdm's bar on stderr (rows so far, rows per second, time elapsed since the
    job started), with the CSV's size after it."""

    def __init__(self, job_id: int) -> None:
        self._job_id = job_id
        self._running = False
        self._bar = tqdm(
            total=None,
            desc=f"job {job_id} waiting for a worker",
            unit=" rows",
            unit_scale=True,
            file=sys.stderr,
            dynamic_ncols=True,
            bar_format="{desc}: {n_fmt}{unit} [{elapsed}, {rate_fmt}]{postfix}",
        )

    def show(self, job: dict[str, Any]) -> None:
        if job["status"] == "running" and not self._running:
            self._running = True
            self._bar.reset()  # count the elapsed time and the rate from the job's start
            self._bar.set_description(
                f"job {self._job_id} running (attempt {job['attempts']}/{job['max_attempts']})"
            )
        progress = job.get("progress") or {}
        rows = int(progress.get("rows") or 0)
        if rows > self._bar.n:
            self._bar.set_postfix_str(f"{_size(progress.get('bytes'))} of CSV", refresh=False)
            self._bar.update(rows - self._bar.n)
        else:
            self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _follow(conn: Any, job_id: int, timeout: float | None) -> None:
    """Show the job's progress (on stderr) until it ends; ClickException if it failed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    terminal = sys.stdout.isatty() and sys.stderr.isatty()
    display: _Display = _Bar(job_id) if terminal else _Lines()
    try:
        while True:
            job = results.report_job(conn, job_id)
            if job["status"] in queue.FINISHED:
                break
            display.show(job)
            if deadline is not None and time.monotonic() >= deadline:
                raise click.ClickException(
                    f"gave up waiting for job {job_id} after {timeout:g}s; it "
                    f"is {job['status']} (see pgdyno report show {job_id})"
                )
            time.sleep(WAIT_POLL)
    finally:
        display.close()
    if job["status"] != "done":
        error = (job.get("last_error") or "").split("\nTraceback")[0]
        raise click.ClickException(f"report job {job_id} {job['status']}: {error}")
    info = results.summary(job)
    click.echo(
        f"job {job_id} done: {info.get('rows', 0):,} rows, "
        f"{_size(info.get('csv_bytes'))} of CSV ({_size(info.get('stored_bytes'))}"
        f" gzipped) in {info.get('duration_s', 0):.1f}s; peak worker memory "
        f"{_size(info.get('worker_peak_rss_bytes'))}",
        err=True,
    )
    click.echo(
        f"stored at {info.get('location')}; fetch it with: pgdyno report fetch {job_id} "
        f"-o {info.get('report')}-{job_id}.csv",
        err=True,
    )


def _progress_line(job: dict[str, Any]) -> str:
    if job["status"] == "ready":
        return f"job {job['id']} waiting for a worker on queue {job['queue']!r}"
    progress = job.get("progress") or {}
    rows = progress.get("rows")
    so_far = (
        "started"
        if rows is None
        else (f"{rows:,} rows, {_size(progress.get('bytes'))} of CSV so far")
    )
    return f"job {job['id']} running (attempt {job['attempts']}/{job['max_attempts']}): {so_far}"


@report.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@database_option
def show(job_id: int, as_json: bool, database_url: str | None) -> None:
    """Status, rows, bytes, duration and peak worker memory of report job JOB_ID."""
    with connection(database_url) as conn:
        info = results.summary(results.report_job(conn, job_id))
    if as_json:
        echo_json(info)
        return
    params = " ".join(f"{k}={v}" for k, v in info["params"].items()) or "-"
    lines = [
        ("report", f"{info['report']}  {params}"),
        (
            "status",
            f"{info['status']} (attempt {info['attempts']}/{info['max_attempts']}, "
            f"queue {info['queue']})",
        ),
    ]
    if "progress" in info:
        lines.append(
            (
                "progress",
                f"{info['progress'].get('rows', 0):,} rows, "
                f"{_size(info['progress'].get('bytes'))} of CSV",
            )
        )
    if "rows" in info:
        lines += [
            ("rows", f"{info['rows']:,}"),
            (
                "bytes",
                f"{_size(info['csv_bytes'])} of CSV, {_size(info['stored_bytes'])} stored gzipped",
            ),
            ("duration", f"{info['duration_s']:.2f}s"),
            (
                "peak memory",
                f"{_size(info['worker_peak_rss_bytes'])} (worker RSS"
                + (")" if info.get("peak_rss_scope") == "report" else " since the worker started)"),
            ),
            ("stored", f"{info['store']} ({info['location']})"),
        ]
    if "error" in info:
        lines.append(("error", info["error"].replace("\n", "\n" + " " * 13)))
    for key, value in lines:
        click.echo(f"{key + ':':<13}{value}")


@report.command()
@click.argument("job_id", type=int)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the CSV to this file (default: stdout).",
)
@database_option
def fetch(job_id: int, output: Path | None, database_url: str | None) -> None:
    """Write the CSV of report job JOB_ID, decompressed, to stdout or --output."""
    with connection(database_url) as conn:
        pieces = results.csv_pieces(conn, results.report_job(conn, job_id))
        if output is None:
            out = sys.stdout.buffer
            for piece in pieces:
                out.write(piece)
            out.flush()
            return
        partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
        try:
            with partial.open("wb") as handle:
                size = 0
                for piece in pieces:
                    handle.write(piece)
                    size += len(piece)
            os.replace(partial, output)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror}") from exc
        finally:
            partial.unlink(missing_ok=True)
    click.echo(f"wrote {output} ({_size(size)})", err=True)


def register(group: click.Group) -> None:
    group.add_command(report)
