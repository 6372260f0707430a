"""``magsag data tier|archive|compact|report``: the lake side from the command line."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from magsag.backends.durations import parse_duration
from magsag.backends.errors import ConfigError, NotFoundError, StorageError
from magsag.backends.schema import utc_now
from magsag.backends.tiering.protocol import COPY, MOVE, tier_source
from magsag.cli.common import (
    AgentOpt,
    BackendOpt,
    DbPathOpt,
    DsnOpt,
    FormatOpt,
    JsonOpt,
    LakeOpt,
    OutputOpt,
    command,
    console,
    err_console,
    fail,
    parse_day,
    print_json,
    print_kv,
    print_table,
    run,
    settings_from,
)
from magsag.cli.render import TEXT_FORMATS, check_output, emit_rows, error, pick_format, say
from magsag.lakehouse import manifest
from magsag.lakehouse.layout import EVENTS, RUNS
from magsag.lakehouse.objstore import Lake, open_lake
from magsag.lakehouse.settings import StorageSettings
from magsag.lakehouse.tiering.report import TierProgress, TierReport
from magsag.storage import open_storage

NoWaitOpt = Annotated[
    bool, typer.Option("--no-wait", help="If another tiering job holds the lock, exit (code 3) instead of waiting.")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Only report what would move; change nothing.")]
EXIT_INTERRUPTED = 130


def register(app: typer.Typer) -> None:
    app.command("tier")(tier)
    app.command("archive")(archive)
    app.command("compact")(compact)
    app.command("report")(report)


# ----------------------------------------------------------------- parsing


def parse_every(text: str | None) -> float | None:
    """``1h``, ``30m``, ``90s``, ``1d`` (or plain seconds) -> seconds (> 0)."""
    if text is None:
        return None
    from magsag.cli.validate import check_every

    seconds = parse_duration(text, "--every", default_unit="s").total_seconds()
    if seconds <= 0:
        raise ConfigError(f"--every: {text!r} is not an interval (use 1h, 30m, 90s or 1d)")
    return check_every(seconds, text)


def parse_days(text: str | None, option: str) -> int | None:
    """A whole number of days: ``7``, ``7d`` (or ``1w``, ``48h``)."""
    if text is None:
        return None
    delta = parse_duration(text, option, default_unit="d")
    if delta % timedelta(days=1):
        raise ConfigError(f"{option}: {text!r} is not a whole number of days (e.g. 7 or 7d)")
    return delta.days


# ---------------------------------------------------------------- progress


class _Bars(TierProgress):
    """Rich bars on stderr: days, events, bytes committed."""

    def __init__(self, progress: Progress):
        self.p = progress
        self.t_days = progress.add_task("days", total=None, unit="")
        self.t_rows = progress.add_task("events", total=None, unit="")
        self.t_bytes = progress.add_task("lake bytes", total=None, unit="bytes")

    def waiting(self, message: str) -> None:
        self.p.console.print(message)

    def plan(self, days: int, rows: int, hot_bytes: int) -> None:
        done = self.p.tasks[self.t_days].completed
        self.p.update(self.t_days, total=done + days)
        self.p.update(self.t_rows, total=self.p.tasks[self.t_rows].completed + rows)

    def day(self, day: Any, step: str) -> None:
        self.p.update(self.t_days, description=f"days [dim]{day} {step}[/]")

    def rows(self, n: int) -> None:
        self.p.advance(self.t_rows, n)

    def bytes(self, n: int) -> None:
        self.p.advance(self.t_bytes, n)

    def day_done(self, day: Any) -> None:
        self.p.advance(self.t_days, 1)


class _AmountColumn(ProgressColumn):
    """Counts as numbers (``12,345``), the bytes task in human units (``1.2 MB``)."""

    def render(self, task: Any) -> Text:
        n = int(task.completed)
        return Text(_human(n) if task.fields.get("unit") == "bytes" else f"{n:,}")


class _Quiet(TierProgress):
    """No bars (JSON output, or stderr is not a terminal); still says when it waits for the lock."""

    def waiting(self, message: str) -> None:
        err_console.print(message)


@contextmanager
def _progress(enabled: bool) -> Iterator[TierProgress]:
    if not enabled:
        yield _Quiet()
        return
    cols = (
        TextColumn("{task.description}"),
        BarColumn(),
        _AmountColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*cols, console=err_console, transient=True) as p:
        yield _Bars(p)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set the event (the job stops between steps) instead of killing it."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    watchdog: list[threading.Timer] = []

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():  # a second signal: give up at once
            raise KeyboardInterrupt
        stop.set()
        name = signal.Signals(signum).name
        err_console.print(f"{name}: stopping after the current step")
        # A step that does not end in time (a long export, a stuck store) is cut short: the
        # job is crash-safe at every point, and the next run finishes what was under way.
        timer = threading.Timer(STOP_GRACE_S, _exit_now, (name,))
        timer.daemon = True
        timer.start()
        watchdog.append(timer)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for t in watchdog:
            t.cancel()
        for s, h in old.items():
            signal.signal(s, h)


STOP_GRACE_S = 2.0  # a signalled job ends within this long, between steps or not


def _exit_now(name: str) -> None:
    err_console.print(f"{name}: stopped mid-step; the next run finishes it")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


# ------------------------------------------------------------------ output


def _human(n: int | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


def _print_report(rep: TierReport, json_out: bool) -> None:
    data = rep.as_dict()
    if json_out:
        print_json(data)
        return
    verb = {MOVE: "tier", COPY: "archive"}[rep.mode]
    if rep.dry_run:
        plan = [d.as_dict() for d in rep.planned if d.movable]
        for p in plan:
            p["hot_bytes"] = _human(p["hot_bytes"])
        print_table(plan, ("day", "events", "runs", "held_events", "held_runs", "hot_bytes"), title=f"{verb} plan")
        console.print(
            f"dry run: {data['days']} days, {data['events']} events, {data['runs']} runs would go to {rep.dest} "
            f"(cutoff {rep.cutoff[:10]}); {data['held_events']} events stay hot with running runs"
            + (f"; {rep.unfinished} unfinished claims will be finished first" if rep.unfinished else "")
        )
        return
    rows = []
    for d in rep.days:
        r = d.as_dict()
        r["bytes"] = _human(d.bytes)
        r["hot_bytes"] = _human(d.hot_bytes)
        r["note"] = "recovered" if d.recovered else ""
        rows.append(r)
    cols = ("day", "events", "runs", "bytes", "hot_bytes", "deleted_events", "duplicates", "seconds", "note")
    if rows:
        print_table(rows, cols, title=f"{verb} to {rep.dest}")
    summary = {
        "days moved" if rep.mode == MOVE else "days copied": data["days"],
        "events": data["events"],
        "runs": data["runs"],
        "lake bytes": _human(data["bytes"]),
        "hot bytes (est.)": _human(data["hot_bytes"]),
        "lake / hot": data["ratio"],
        "held hot (running runs)": data["held_events"],
        "seconds": data["seconds"],
    }
    if rep.skipped:
        summary["skipped"] = "; ".join(f"{k}: {v}" for k, v in rep.skipped.items())
    if rep.stopped:
        summary["stopped"] = "by a signal; the next run finishes the rest"
    print_kv(summary, title=f"{verb} report ({rep.cutoff[:10]} cutoff)")


# ------------------------------------------------------------- the jobs


async def _job(
    settings: StorageSettings,
    lake: Lake,
    *,
    mode: str,
    hot_days: int,
    dry_run: bool,
    wait: bool,
    progress: TierProgress,
    stop: Callable[[], bool],
    prefix: str,
) -> TierReport:
    from magsag.lakehouse.tiering.job import run_tier

    async with open_storage(settings, read_only=dry_run) as storage:
        rep = await run_tier(
            storage,
            lake,
            hot_days=hot_days,
            mode=mode,
            dry_run=dry_run,
            wait=wait,
            progress=progress,
            should_stop=stop,
            job_prefix=prefix,
        )
        if settings.retention and mode == MOVE and not dry_run and not rep.stopped:
            from magsag.lakehouse.retention import apply_retention  # the scheduled job applies the rules

            kept = await apply_retention(storage, settings, lake_url=lake.url, wait=wait)
            err_console.print(f"retention: {kept.hot} hot, {[(k['dest'], k['events']) for k in kept.lakes]} lake")
        return rep


def _run_once(settings: StorageSettings, lake: Lake, *, json_out: bool, stop: threading.Event, **kw: Any) -> TierReport:
    with _progress(not json_out and err_console.is_terminal) as bars:
        return run(_job(settings, lake, progress=bars, stop=stop.is_set, **kw))


def _tier_command(
    settings: StorageSettings,
    lake: Lake,
    *,
    every: float | None,
    json_out: bool,
    metrics_file: Path | None = None,
    metrics_port: int | None = None,
    **kw: Any,
) -> None:
    from magsag.backends.allocator import lean_process

    lean_process()  # a bulk job: allocator settings that give memory back (backends/allocator.py)
    metrics = _job_metrics(metrics_file, metrics_port)

    def once(stop: threading.Event) -> TierReport:
        started = time.monotonic()
        try:
            rep = _run_once(settings, lake, json_out=json_out, stop=stop, **kw)
        except BaseException:
            if metrics is not None:
                metrics.record(None, time.monotonic() - started, failed=True)
                _write_metrics(metrics, metrics_file)
            raise
        if metrics is not None:
            metrics.record(rep, time.monotonic() - started)
            _write_metrics(metrics, metrics_file)
        return rep

    with _stop_on_signals() as stop:
        if every is None:
            rep = once(stop)
            _print_report(rep, json_out)
            if rep.stopped:
                raise typer.Exit(EXIT_INTERRUPTED)
            return
        while not stop.is_set():
            started = time.monotonic()
            try:
                rep = once(stop)
                if json_out:
                    _print_report(rep, json_out)
                else:
                    _log(_one_line(rep))
            except ConfigError:
                raise
            except StorageError as exc:  # the store or the lake is down: try again next time
                _log(f"error: {str(exc).splitlines()[0]} (retrying in {every:.0f}s)", err=True)
            stop.wait(max(0.0, every - (time.monotonic() - started)))
        _log("stopped", err=True)


def _log(message: str, *, err: bool = False) -> None:
    """A line of a long-running job (``--every``): UTC timestamp first."""
    say((f"{utc_now():%Y-%m-%dT%H:%M:%SZ}", "dim"), " ", message, err=err)


def _one_line(rep: TierReport) -> str:
    data = rep.as_dict()
    verb = {MOVE: "tier", COPY: "archive"}[rep.mode]
    text = (
        f"{verb}: {data['days']} days, {data['events']} events, {data['runs']} runs, "
        f"{_human(data['bytes']) or '0 B'} to {rep.dest} (cutoff {rep.cutoff[:10]})"
    )
    if rep.skipped:
        text += f"; skipped {len(rep.skipped)} days"
    return text + ("; stopped by a signal" if rep.stopped else "")


def _job_metrics(metrics_file: Path | None, metrics_port: int | None) -> Any:
    """The job's Prometheus metrics (``--metrics-file``, ``--metrics-port``), or None."""
    if metrics_file is None and metrics_port is None:
        return None
    try:
        from magsag.serve.tier_metrics import TierJobMetrics
    except ImportError:
        raise ConfigError(
            "--metrics-file/--metrics-port need prometheus-client: pip install 'magsag-storage[serve]'"
        ) from None
    metrics = TierJobMetrics()
    if metrics_port is not None:
        try:
            metrics.serve(metrics_port)
        except OSError as exc:
            raise ConfigError(f"--metrics-port {metrics_port}: {exc.strerror or exc}") from None
    return metrics


def _write_metrics(metrics: Any, path: Path | None) -> None:
    if path is None:
        return
    try:
        metrics.write_textfile(path)
    except OSError as exc:
        error(f"--metrics-file {path}: {exc.strerror or exc}")


MetricsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        help="After each job write its outcome in Prometheus text format here (node-exporter textfile collector).",
    ),
]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        help="With --every: serve the job's metrics at http://127.0.0.1:PORT/metrics.",
    ),
]


@command
def tier(
    hot_days: Annotated[
        str | None,
        typer.Option(
            "--hot-days", metavar="N", help="Keep N whole UTC days hot (default: MAGSAG_STORAGE_HOT_DAYS or 7)."
        ),
    ] = None,
    dry_run: DryRunOpt = False,
    every: Annotated[
        str | None,
        typer.Option(
            "--every", metavar="INTERVAL", help="Run as a long-lived job every INTERVAL (1h, 30m); SIGTERM stops it."
        ),
    ] = None,
    no_wait: NoWaitOpt = False,
    lake: LakeOpt = None,
    metrics_file: MetricsFileOpt = None,
    metrics_port: MetricsPortOpt = None,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Move every complete UTC day older than the hot window from the hot store to the lake.

    Exactly once: a day's rows leave the hot store only after their Parquet files are
    verified and committed; a rerun finishes an interrupted job. The days go to the
    configured lake (MAGSAG_STORAGE_LAKE_URL), where every reader finds them: --lake may
    only name that same lake (`archive` copies days anywhere else). Runs still running (and
    their events) stay hot. Exit codes: 0 done, 2 error, 3 locked (--no-wait), 130 stopped.
    --metrics-file/--metrics-port expose the job's outcome to Prometheus (docs/operations.md).
    """
    settings = settings_from(backend, db_path, dsn, hot_days=parse_days(hot_days, "--hot-days"), lake_url=lake)
    interval = parse_every(every)
    if metrics_port is not None and interval is None:
        raise ConfigError("--metrics-port needs --every (a one-shot job writes --metrics-file instead)")
    the_lake = open_lake(settings.lake_url, settings)
    if lake is not None:
        from magsag.lakehouse.objstore import check_persistent
        from magsag.lakehouse.tiering.destination import dest_key

        check_persistent(the_lake)  # a lake that cannot keep rows is refused first, whatever is configured

        configured = settings_from(backend, db_path, dsn).lake_url
        if dest_key(the_lake) != dest_key(open_lake(configured, settings)):
            raise ConfigError(
                f"--lake {lake} is not the configured lake ({configured}): tier moves days out of the hot store "
                "into the lake every reader uses; set MAGSAG_STORAGE_LAKE_URL to change it, or copy days "
                f"elsewhere with `magsag data archive {lake}`"
            )
    _tier_command(
        settings,
        the_lake,
        every=interval,
        json_out=json_out,
        metrics_file=metrics_file,
        metrics_port=metrics_port,
        mode=MOVE,
        hot_days=settings.hot_days,
        dry_run=dry_run,
        wait=not no_wait,
        prefix="tier",
    )


@command
def archive(
    dest: Annotated[
        str | None,
        typer.Argument(
            metavar="[DEST]",
            help="Where to copy: a folder or s3://bucket/prefix (default: MAGSAG_STORAGE_ARCHIVE_DESTINATION).",
            show_default=False,
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            "--since",
            metavar="N",
            help="Archive whole UTC days older than N days (default: the hot window). --since is the "
            "specification's name for it, kept: here it means older than.",
        ),
    ] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Delete the archived rows from the hot store.")] = False,
    dry_run: DryRunOpt = False,
    no_wait: NoWaitOpt = False,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Copy days older than N to DEST (Parquet, same layout as the lake), exactly once.

    Rows already archived to DEST are not copied again. With --delete the rows leave the
    hot store once committed in DEST (like `tier`, to another place).
    """
    settings = settings_from(backend, db_path, dsn, hot_days=parse_days(older_than, "--older-than"))
    target = dest or settings.archive_destination
    if not target:
        raise ConfigError("archive: give DEST or set MAGSAG_STORAGE_ARCHIVE_DESTINATION")
    the_lake = open_lake(target, settings)
    _tier_command(
        settings,
        the_lake,
        every=None,
        json_out=json_out,
        mode=MOVE if delete else COPY,
        hot_days=settings.hot_days,
        dry_run=dry_run,
        wait=not no_wait,
        prefix="archive",
    )


@command
def compact(
    partition: Annotated[
        str | None, typer.Option("--partition", metavar="YYYY-MM-DD", help="Only this day (dt=...).")
    ] = None,
    lake: LakeOpt = None,
    no_wait: NoWaitOpt = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Verify every live file against its manifest entry; move those that fail (missing, "
            "truncated, garbled, wrong schema) with their entries to _magsag/quarantine/.",
        ),
    ] = False,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Merge the small files of each lake partition into one, atomically.

    Readers never see a partition half-merged. Holds the tiering lock while it runs.
    Uncommitted files older than a day are removed. --repair sets damaged files aside
    first (nothing is deleted) and reports what it set aside.
    """
    settings = settings_from(backend, db_path, dsn, lake_url=lake)
    day = parse_day(partition, "--partition") if partition else None
    the_lake = open_lake(settings.lake_url, settings)
    if day is not None and not any(manifest.live_entries(the_lake, ds, day) for ds in (EVENTS, RUNS)):
        raise NotFoundError(f"--partition: the lake {the_lake.uri()} holds no partition dt={day.isoformat()}")

    async def go() -> list[dict[str, Any]]:
        import asyncio

        from magsag.lakehouse.compact import compact_lake
        from magsag.lakehouse.layout import new_job_id

        async with open_storage(settings) as storage:
            src = tier_source(storage)
            try:
                async with src.job_lock(wait=not no_wait):
                    if repair:
                        from magsag.lakehouse.lakecheck import repair_lake

                        job = new_job_id("repair")
                        return [
                            {"status": "set aside", **r}
                            for r in await asyncio.to_thread(repair_lake, the_lake, partition=day, stamp=job)
                        ] + await asyncio.to_thread(compact_lake, the_lake, partition=day, job_id=job)
                    return await asyncio.to_thread(compact_lake, the_lake, partition=day, job_id=new_job_id("compact"))
            finally:
                await src.close()

    results = run(go())
    if json_out:
        print_json(results)
        return
    aside = [r for r in results if r.get("status") == "set aside"]
    if aside:
        print_table(aside, ("dataset", "dt", "path", "rows", "problem"), title="set aside in _magsag/quarantine/")
    rows = [r for r in results if r.get("status") == "compacted"]
    cols = ("dataset", "dt", "files_before", "files_after", "rows", "bytes_before", "bytes_after", "seconds")
    if rows:
        print_table(rows, cols, title="compacted")
    console.print(f"compacted {len(rows)} partitions" + ("" if rows else " (nothing to merge)"))


@command
def report(
    days: Annotated[int, typer.Option("--days", min=0, help="Newest N lake days (0: all).")] = 3,
    agent: AgentOpt = None,
    lake: LakeOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cost and error rate per agent per day, read back from the lake with DuckDB.

    cost_usd and tokens are what each agent's runs spent themselves (a MAG's delegates
    count under their own agent), so the column sums to the money spent (docs/query.md).
    Exit code 1 when the lake holds no data yet.
    """
    from magsag.lakehouse.lake_report import lake_summary

    out_fmt = pick_format(fmt, json_out, (*TEXT_FORMATS, "parquet"))
    check_output(out_fmt, output)
    settings = settings_from(lake_url=lake)
    result = lake_summary(open_lake(settings.lake_url, settings), days=days, agent=agent)
    cols = ("dt", "agent_slug", "runs", "failed", "error_rate", "cost_usd", "tokens", "events", "error_events")
    if out_fmt != "table" or output is not None:
        emit_rows(result["summary"], cols, out_fmt, output, value=result)
        return
    print_table(result["summary"], cols, title=f"lake {result['lake']}")
    console.print(
        f"lake holds {result['rows']} events over {result['days']} days "
        f"({result['first_day']} .. {result['last_day']}); showing {'all' if not days else f'the newest {days}'}"
    )
    if not result["summary"]:
        raise fail("no rows match", 1)
