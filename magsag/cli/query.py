"""``magsag data sql|stats``: read-only SQL over every tier, and what each tier holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from magsag.cli.common import (
    BackendOpt,
    DbPathOpt,
    DsnOpt,
    FormatOpt,
    JsonOpt,
    LakeOpt,
    OutputOpt,
    command,
    err_console,
    print_table,
    run,
    settings_from,
)
from magsag.cli.render import check_output, console, emit, pick_format, render_rows, say, write_text

FORMATS = ("table", "json", "jsonl", "csv", "tsv", "parquet")


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)
    app.command("stats")(stats)


@command
def sql(
    query: Annotated[str, typer.Argument(metavar="SQL", help="One SELECT over the views (see docs/query.md).")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="table, json, jsonl, csv, tsv or parquet (parquet needs --output)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write the result to this file.")] = None,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="Rows shown by --format table (the other formats write all).")
    ] = 200,
    lake: LakeOpt = None,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run one read-only SQL query over every tier (DuckDB).

    Views: events, runs (hot + lake, each row once, with a tier column), lake_events,
    lake_runs, hot_events, hot_runs, mcp_calls, metrics, costs, run_summary. Filter on
    dt (a DATE) to read only those days of the lake. Anything but one SELECT, and any
    reading of files or databases other than the views, is refused.
    """
    from magsag.lakehouse.query import run_sql

    fmt = pick_format(fmt, json_out, FORMATS)
    check_output(fmt, output)
    settings = settings_from(backend, db_path, dsn, lake_url=lake)
    if output is not None:
        from magsag.cli.validate import check_output as check_output_path

        check_output_path(output, settings)
    # --format table shows --max-rows rows: the query stops after one more (to say it was cut)
    table = run_sql(query, settings, max_rows=max_rows + 1 if fmt == "table" and output is None else None)
    write_result(table, fmt, output, max_rows)


def write_result(table: Any, fmt: str, output: Path | None, max_rows: int) -> None:
    from magsag.lakehouse.query import arrow_rows

    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert output is not None
        pq.write_table(table, str(output), compression="zstd")
        err_console.print(f"wrote {table.num_rows} rows to {output}")
        return
    if fmt == "table" and output is None:
        shown = table.slice(0, max_rows)
        rows = arrow_rows(shown)
        many = table.num_rows > max_rows  # the query stopped after max_rows + 1: the total is unknown
        print_table(rows, table.column_names, title=f"more than {max_rows} rows" if many else f"{table.num_rows} rows")
        if table.num_rows > max_rows:
            err_console.print(f"(showing the first {max_rows}; use --max-rows, or --format csv/json/parquet)")
        return
    write_text(render_rows(arrow_rows(table), table.column_names, fmt), output, f"{table.num_rows} rows")


@command
def stats(
    lake: LakeOpt = None,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rows, bytes, files, oldest/newest and compression per tier and per day.

    Lake partitions holding several small files are flagged (compaction merges them).
    --format json prints the whole result; jsonl, csv and tsv one row per tier, dataset
    and day.
    """
    out_fmt = pick_format(fmt, json_out)
    from magsag.lakehouse.objstore import open_lake
    from magsag.lakehouse.stats import data_stats
    from magsag.storage import open_storage

    settings = settings_from(backend, db_path, dsn, lake_url=lake)

    async def go() -> dict[str, Any]:
        async with open_storage(settings, read_only=True) as storage:
            return await data_stats(storage, open_lake(settings.lake_url, settings))

    result = run(go())
    if out_fmt == "table" and output is None:
        _print_stats(result)
        return
    if out_fmt == "table":
        with console.capture() as cap:
            _print_stats(result)
        write_text(cap.get(), output, "the statistics")
        return
    emit(stats_rows(result), STATS_COLUMNS, out_fmt, output, value=result)


STATS_COLUMNS = ("tier", "dataset", "dt", "events", "runs", "rows", "files", "bytes")
STATS_COLUMNS += ("compression", "oldest", "newest", "small_files")


def stats_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per tier, dataset and day (the hot store counts events and runs per day together)."""
    rows = [{"tier": "hot", "dataset": "events+runs", **p} for p in result["hot"].get("partitions") or []]
    for dataset, d in ((result.get("lake") or {}).get("datasets") or {}).items():
        rows.extend({"tier": "lake", "dataset": dataset, **p} for p in d["partitions"])
    return rows


def _mb(n: Any) -> str:
    return "" if n is None else f"{n / 1e6:,.2f} MB"


def _print_stats(result: dict[str, Any]) -> None:
    hot = result["hot"]
    say(
        ("hot", "bold"),
        f" ({hot.get('backend')}): {hot.get('events', 0):,} events, {hot.get('runs', 0):,} runs, "
        f"{_mb(hot.get('bytes'))}, {hot.get('oldest') or '-'} .. {hot.get('newest') or '-'}",
    )
    if hot.get("partitions"):
        print_table(hot["partitions"], ["dt", "events", "runs", "bytes", "oldest", "newest"], title="hot days")
    lake = result.get("lake") or {}
    if not lake.get("exists"):
        say(("lake", "bold"), f" {lake.get('url', '')}: empty")
        return
    for dataset, d in lake["datasets"].items():
        say(
            (f"lake {dataset}", "bold"),
            f" ({lake['url']}): {d['rows']:,} rows, {d['files']} files, {_mb(d['bytes'])}, "
            f"{d['oldest'] or '-'} .. {d['newest'] or '-'}",
        )
        rows = [
            {**p, "bytes": _mb(p["bytes"]), "small_files": "compact" if p["small_files"] else ""}
            for p in d["partitions"]
        ]
        print_table(rows, ["dt", "files", "rows", "bytes", "compression", "oldest", "newest", "small_files"])
        if d["flagged"]:
            err_console.print(
                f"{len(d['flagged'])} {dataset} partition(s) hold several small files: "
                + ", ".join(d["flagged"][:10])
                + (" ..." if len(d["flagged"]) > 10 else "")
            )
