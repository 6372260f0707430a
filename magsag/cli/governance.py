"""``magsag data delete``: erase runs or events from every tier (docs/governance.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from magsag.cli.common import (
    AgentOpt,
    BackendOpt,
    DbPathOpt,
    DsnOpt,
    JsonOpt,
    SinceOpt,
    UntilOpt,
    command,
    console,
    parse_when,
    print_json,
    print_table,
    run,
    settings_from,
)


def register(app: typer.Typer) -> None:
    app.command("delete")(delete)


@command
def delete(
    run_ids: Annotated[list[str] | None, typer.Argument(help="Run ids to erase (with their delegated runs).")] = None,
    no_children: Annotated[
        bool, typer.Option("--no-children", help="Keep the delegated (child) runs of the given runs.")
    ] = False,
    agent: AgentOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    matching: Annotated[
        str | None,
        typer.Option("--matching", metavar="TEXT", help="Erase the events whose message or payload contains TEXT."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show per tier what would go; change nothing.")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Only finish erase jobs an interrupted run left (no selection needed).")
    ] = False,
    lake: Annotated[str | None, typer.Option("--lake", help="Lake root (default: MAGSAG_STORAGE_LAKE_URL).")] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="If a tiering job holds the lock, exit (code 3) instead of waiting.")
    ] = False,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Erase runs everywhere: hot store, lake, archive destinations and ClickHouse.

    Select runs by id (their delegated runs too unless --no-children), by --agent, by
    when they started (--since/--until), or single events with --matching TEXT (a leaked
    secret). Erased ids are recorded in a tombstone ledger (ids and time, no content) so
    late copies cannot bring them back. Interrupted? Run the command again (or --resume).
    Exit codes: 0 done, 2 bad input, 1 failed, 3 locked (--no-wait).
    """
    from magsag.backends.erase import EraseRequest
    from magsag.storage import delete_runs, open_storage

    settings = settings_from(backend, db_path, dsn, **({"lake_url": lake} if lake else {}))
    since_dt = parse_when(since, "--since")
    until_dt = parse_when(until, "--until")
    if not resume or run_ids or agent or since_dt or until_dt or matching:  # bad input fails before any I/O
        EraseRequest(tuple(run_ids or ()), not no_children, agent, since_dt, until_dt, matching)

    async def go() -> dict[str, Any]:
        async with open_storage(settings) as storage:
            return await delete_runs(
                storage,
                settings,
                run_ids or (),
                children=not no_children,
                agent=agent,
                since=since_dt,
                until=until_dt,
                matching=matching,
                dry_run=dry_run,
                resume_only=resume,
                lake_url=lake,
                wait=not no_wait,
            )

    report = run(go())
    if json_out:
        print_json(report)
        return
    rows = [{"tier": "hot", "where": "hot store", **report["hot"]}]
    for lk in report["lakes"]:
        rows.append(
            {
                "tier": lk["role"],
                "where": lk["dest"],
                "events": lk["events"],
                "runs": lk["runs"],
                "partitions": len(lk["partitions"]),
            }
        )
    if report["clickhouse"]:
        rows.append({"tier": "clickhouse", "where": report["clickhouse"]["where"], **report["clickhouse"]["rows"]})
    verb = "would erase" if dry_run else "erased"
    if report["resumed"]:
        console.print(f"finished {len(report['resumed'])} interrupted erase job(s)")
    if resume and not (run_ids or agent or since or until or matching):
        return
    print_table(rows, ("tier", "where", "events", "runs", "partitions"), title=verb)
    console.print(
        f"{verb} {report['selected_runs']} runs and {report['selected_events']} single events"
        + ("" if dry_run else f" (job {', '.join(report['job_ids']) or 'none: nothing selected'})")
    )
