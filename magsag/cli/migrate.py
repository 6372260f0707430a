"""``magsag data migrate``: import legacy ``.runs/agents`` folders and the cost ledger."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from magsag.backends.errors import ConfigError
from magsag.cli.common import (
    BackendOpt,
    DbPathOpt,
    DsnOpt,
    JsonOpt,
    command,
    console,
    err_console,
    print_json,
    run,
    settings_from,
)
from magsag.cli.render import error
from magsag.ingest.legacy import LegacyImporter
from magsag.ingest.legacy_report import ImportReport
from magsag.storage import open_storage

EXIT_REJECTED = 1


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)


@command
def migrate(
    source: Annotated[
        Path | None,
        typer.Argument(
            metavar="[SOURCE]",
            help="Folder of legacy run folders (default: MAGSAG_RUNS_BASE_DIR or .runs/agents).",
            show_default=False,
        ),
    ] = None,
    costs: Annotated[
        list[Path] | None,
        typer.Option(
            "--costs",
            help="Cost ledger to import too: costs.jsonl, costs.db, or a folder holding them (e.g. .runs). "
            "Repeat for several.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write nothing; report exactly what an import would add.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Check everything first; if any line is rejected, write nothing.")
    ] = False,
    no_runs: Annotated[bool, typer.Option("--no-runs", help="Import only the cost ledger (--costs).")] = False,
    show: Annotated[
        int, typer.Option("--show-rejections", min=0, help="How many rejected lines to list (all are counted).")
    ] = 20,
    max_line_mb: Annotated[
        float, typer.Option("--max-line-mb", min=0.001, help="Reject JSON lines longer than this (MiB).")
    ] = 64.0,
    rescan: Annotated[
        bool,
        typer.Option(
            "--rescan", help="Read every run folder again, even those unchanged (same sizes and times) since."
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=0, help="Parser processes for large imports (default: cores - 1; 0: none)."),
    ] = None,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Import legacy agent runs (.runs/agents/<run_id>/...) into the hot store.

    Reads logs.jsonl, metrics.json, summary.json, mcp_calls.jsonl, events.jsonl and plan.json
    of every run folder; with --costs also the cost ledger. Safe to run again: records
    already stored are skipped, so a run folder that grew imports only its new lines.
    Damaged lines are reported as path:line: reason and skipped; good data is still
    imported. Exit code 0 when nothing was rejected, 1 when something was (with --strict,
    nothing is written then), 2 for a usage or configuration error.
    """
    from magsag.cli.validate import check_workers

    check_workers(workers)
    settings = settings_from(backend, db_path, dsn)
    src = None if no_runs else (source if source is not None else settings.runs_base_dir)
    if no_runs and not costs:
        raise ConfigError("--no-runs needs --costs (the cost ledger to import)")
    with contextlib.ExitStack() as stack:
        if dry_run and settings.backend == "sqlite" and not Path(settings.db_path).exists():
            # A dry run writes nothing: with no store yet, compare against an empty one in a
            # temporary folder (the lake, if configured, is still read) instead of creating it.
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="magsag-dry-run-")))
            settings = settings.model_copy(update={"db_path": tmp / "empty.db"})
        report = _import(settings, src, costs or [], dry_run, strict, max_line_mb, workers, rescan, json_out)
    if json_out:
        print_json(report.to_dict())
    else:
        print_report(report, show)
    if not report.ok:
        raise typer.Exit(EXIT_REJECTED)


def _import(
    settings: Any,
    src: Path | None,
    costs: list[Path],
    dry_run: bool,
    strict: bool,
    max_line_mb: float,
    workers: int | None,
    rescan: bool,
    json_out: bool,
) -> ImportReport:
    async def go() -> ImportReport:
        async with open_storage(settings) as storage:
            with Progress(
                TextColumn("[bold]migrate[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("runs"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
                disable=json_out,
            ) as bar:
                task = bar.add_task("migrate", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                importer = LegacyImporter(
                    storage,
                    max_line_bytes=int(max_line_mb * 1024 * 1024),
                    workers=workers,
                    progress=progress,
                    rescan=rescan,
                )
                return await importer.run(src, costs, dry_run=dry_run, strict=strict)

    return run(go())


def print_report(report: ImportReport, show: int = 20) -> None:
    """The human summary: runs, events by type, rejected lines, time and speed."""
    if report.aborted:
        title = "strict: nothing written"
    elif report.dry_run:
        title = "dry run (nothing written)"
    else:
        title = "imported"
    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows: list[tuple[str, Any]] = [
        ("runs imported" if not report.dry_run else "runs to import", report.runs_imported),
        ("runs already present", report.runs_present),
        ("runs skipped", report.runs_skipped),
    ]
    if report.cost_runs_created:
        rows.append(("runs known only from the cost ledger", report.cost_runs_created))
    for etype, n in sorted(report.events_by_type.items()):
        rows.append((f"events: {etype}", n))
    rows.append(("events new (total)", report.events_new))
    rows.append(("events already present", report.events_present))
    if report.duplicates:
        rows.append(("duplicate records (stored once)", report.duplicates))
    rows.append(("lines rejected", report.rejected))
    rows.append(("seconds", f"{report.seconds:.2f}"))
    rows.append(("events/s", f"{report.events_per_second:,.0f}"))
    for what, n in rows:
        table.add_row(what, f"{n:,}" if isinstance(n, int) else str(n))
    console.print(table)
    for run_name, reason in report.skipped[:show]:
        err_console.print(f"skipped {run_name}: {reason}", markup=False, highlight=False, soft_wrap=True)
    if report.rejected:
        for r in report.rejections[:show]:
            err_console.print(str(r), markup=False, highlight=False, soft_wrap=True)
        hidden = report.rejected - min(show, len(report.rejections))
        if hidden > 0:
            err_console.print(f"... and {hidden:,} more rejected (--show-rejections N, or --json for the first 1000)")
    if report.aborted:
        error(report.aborted)
