"""``magsag data clickhouse init|status`` and ``magsag data load clickhouse``: the lake in ClickHouse."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from magsag.backends.errors import ConfigError
from magsag.cli.common import (
    JsonOpt,
    command,
    console,
    err_console,
    parse_day,
    parse_when,
    print_json,
    print_kv,
    print_table,
    settings_from,
)
from magsag.cli.render import say

clickhouse_app = typer.Typer(
    name="clickhouse", help="ClickHouse tables for analytics (chDB or a server).", no_args_is_help=True
)
load_app = typer.Typer(name="load", help="Load the lake into an analytics engine.", no_args_is_help=True)

DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database", help="ClickHouse database (default: MAGSAG_CLICKHOUSE_DATABASE or magsag)."),
]
PLAN_COLUMNS = ("dataset", "dt", "action", "files", "rows", "loaded_rows", "mode")


def register(app: typer.Typer) -> None:
    app.add_typer(clickhouse_app, name="clickhouse")
    app.add_typer(load_app, name="load")
    clickhouse_app.command("init")(init)
    clickhouse_app.command("status")(status)
    load_app.command("clickhouse")(load_clickhouse)


@command
def init(database: DatabaseOpt = None, json_out: JsonOpt = False) -> None:
    """Create the ClickHouse database and tables (events, runs, load ledger), or check existing ones.

    Safe to run again. Uses the server in MAGSAG_CLICKHOUSE_URL, else embedded chDB in
    MAGSAG_CLICKHOUSE_PATH. Tables that exist with other columns or keys are an error.
    """
    from magsag.lakehouse.clickhouse.schema import init_from_settings

    info = init_from_settings(settings_from(clickhouse_database=database))
    if json_out:
        print_json(info)
        return
    where = f"database {info['database']} on {info['engine']}"
    say(("ready", "green"), f": {where} (schema v{info['schema_version']})")
    print_kv({"created": ", ".join(info["created"]) or "nothing (all present)", "ttl_days": info["ttl_days"]})


@command
def status(database: DatabaseOpt = None, json_out: JsonOpt = False) -> None:
    """Show the load ledger: each loaded lake partition with its rows and load time."""
    from magsag.lakehouse.clickhouse.schema import ledger_from_settings

    rows = ledger_from_settings(settings_from(clickhouse_database=database))
    if json_out:
        print_json(rows)
        return
    print_table(rows, ("dataset", "dt", "rows", "loaded_at", "fingerprint"), title=f"{len(rows)} partitions loaded")


def _day(text: str | None, option: str) -> Any:
    when = parse_when(text, option)
    return when.date() if when is not None else None


@command
def load_clickhouse(
    since: Annotated[
        str | None, typer.Option("--since", help="First day to load: YYYY-MM-DD or an age like 7d (inclusive).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Stop before this day: YYYY-MM-DD or an age like 1d (exclusive).")
    ] = None,
    partition: Annotated[
        list[str] | None,
        typer.Option("--partition", help="Only this day (YYYY-MM-DD or dt=YYYY-MM-DD); repeat for several."),
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="events or runs (default both); repeat for several.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show which partitions would load, and why.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Reload partitions the ledger says are current.")] = False,
    client_side: Annotated[
        bool,
        typer.Option(
            "--client-side", help="Read the Parquet here and push Arrow batches, even if ClickHouse can reach the lake."
        ),
    ] = False,
    lake: Annotated[str | None, typer.Option("--lake", help="Lake root (default: MAGSAG_STORAGE_LAKE_URL).")] = None,
    database: DatabaseOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Load new and changed lake partitions into ClickHouse, each day replaced atomically.

    A ledger in ClickHouse remembers each partition's manifest fingerprint, so a scheduled
    run loads only new days and days that gained or replaced files. After each day the rows
    in ClickHouse must equal the manifest's, or the load stops (exit 2) and the ledger keeps
    the old state. ClickHouse reads the Parquet itself when it can reach the lake
    (file() / s3()), otherwise the files are read here and sent as Arrow.
    """
    from magsag.lakehouse.clickhouse.load import load_from_settings

    datasets = tuple(dataset or ("events", "runs"))
    for ds in datasets:
        if ds not in ("events", "runs"):
            raise ConfigError(f"--dataset: {ds!r} is not events or runs")
    days = [parse_day(p, "--partition") for p in partition] if partition else None
    settings = settings_from(clickhouse_database=database)
    with Progress(
        TextColumn("[bold]load[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=json_out or dry_run,
    ) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        report = load_from_settings(
            settings,
            lake,
            since=_day(since, "--since"),
            until=_day(until, "--until"),
            days=days,
            datasets=datasets,
            dry_run=dry_run,
            client_side=client_side,
            force=force,
            progress=progress,
        )
    out = report.as_dict()
    if json_out:
        print_json(out)
        return
    todo = [p for p in out["partitions"] if p["action"] in ("new", "changed", "forced")]
    shown = out["partitions"] if dry_run else todo
    if shown:
        title = f"{'plan' if dry_run else 'loaded'}: {report.database} on {report.engine}"
        print_table(shown, PLAN_COLUMNS, title=title)
    current = sum(1 for p in out["partitions"] if p["action"] == "current")
    expired = sum(1 for p in out["partitions"] if p["action"] == "expired")
    tail = f"; {current} current" + (f", {expired} past the TTL" if expired else "")
    if dry_run:
        rows = sum(p["rows"] for p in todo)
        console.print(f"dry run: would load {len(todo)} partitions ({rows} rows){tail}")
    else:
        how = f", {report.mode}-side" if report.mode else ""
        console.print(
            f"loaded {report.loaded_partitions} partitions, {report.loaded_rows} rows in {report.seconds:.2f}s "
            f"({report.rows_per_s:,.0f} rows/s{how}){tail}"
            + ("; rows verified against the manifest" if report.loaded_partitions else "")
        )
    if not out["partitions"] and not report.not_in_lake:
        err_console.print(f"note: lake {report.lake} has no committed partitions (nothing tiered yet?)", soft_wrap=True)
    if report.fallback:
        err_console.print(f"note: {report.fallback}; loaded client-side", soft_wrap=True)
    if report.not_in_lake:
        gone = ", ".join(report.not_in_lake[:10])
        err_console.print(f"note: loaded but no longer in the lake (kept): {gone}", soft_wrap=True)
