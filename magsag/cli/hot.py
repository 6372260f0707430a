"""``magsag data init|query|search|vacuum|demo``: the hot store from the command line."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from magsag.backends.errors import ConfigError, NotFoundError
from magsag.backends.schema import EVENT_COLUMNS as EVENT_FIELDS
from magsag.backends.schema import RUN_STATUSES
from magsag.backends.tiering.protocol import tier_source
from magsag.cli.common import (
    AgentOpt,
    BackendOpt,
    DbPathOpt,
    DsnOpt,
    FormatOpt,
    JsonOpt,
    LakeOpt,
    OutputOpt,
    SinceOpt,
    UntilOpt,
    command,
    console,
    err_console,
    fail,
    parse_when,
    print_json,
    print_kv,
    print_table,
    run,
    settings_from,
)
from magsag.cli.render import (
    TEXT_FORMATS,
    check_output,
    count_title,
    emit,
    emit_rows,
    pick_format,
    say,
    styled,
    write_text,
)
from magsag.lakehouse.objstore import open_lake
from magsag.storage import open_storage

COUNT_CAP = 1000  # list and search count the matches up to this many for their titles
RUN_EXPORT_COLUMNS = ("run_id", "agent_slug", "parent_run_id", "status", "started_at", "ended_at", "metrics", "tags")
EVENT_EXPORT_COLUMNS = (*EVENT_FIELDS, "tier")
SEARCH_EXPORT_COLUMNS = (*EVENT_FIELDS, "score", "tier")
RUN_COLUMNS = ("run_id", "agent_slug", "status", "started_at", "duration_s", "cost_usd", "tokens", "parent_run_id")
EVENT_COLUMNS = ("ts", "type", "level", "msg", "span_id", "tier")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("query")(query)
    app.command("search")(search)
    app.command("vacuum")(vacuum)
    app.command("demo")(demo)


@command
def init(
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    fts: Annotated[
        bool | None, typer.Option("--fts/--no-fts", help="Keep a full-text index over messages (SQLite).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create or upgrade the hot store's schema (safe to run again)."""
    settings = settings_from(backend, db_path, dsn, enable_fts=fts)

    async def go() -> dict[str, Any]:
        async with open_storage(settings) as storage:
            info: dict[str, Any] = {"backend": storage.name}
            stats = getattr(storage, "stats", None)
            if stats is not None:
                info.update(await stats())
            info["capabilities"] = [k for k, v in storage.capabilities.as_dict().items() if v]
            return info

    info = run(go())
    if json_out:
        print_json(info)
    else:
        say(("ready", "green"), f": {info['backend']} hot store")
        print_kv({k: v for k, v in info.items() if k != "backend"})


def _run_row(r: dict[str, Any]) -> dict[str, Any]:
    metrics = r.get("metrics") or {}
    row = dict(r)
    dur = metrics.get("duration_ms")
    row["duration_s"] = round(dur / 1000, 2) if isinstance(dur, (int, float)) else None
    row["cost_usd"] = metrics.get("cost_usd")
    row["tokens"] = metrics.get("tokens")
    return row


@command
def query(
    run_id: Annotated[str | None, typer.Option("--run-id", help="Show one run and its events.")] = None,
    tree: Annotated[
        bool, typer.Option("--tree", help="With --run-id: its delegation tree (status, duration, cost per level).")
    ] = False,
    parent: Annotated[str | None, typer.Option("--parent", help="Only the runs this run delegated to.")] = None,
    agent: AgentOpt = None,
    status: Annotated[
        str | None, typer.Option("--status", help="running, succeeded, failed or canceled (any case).")
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=0, help="Most runs to list (default 10), or events to show with --run-id (default all)."
        ),
    ] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="With --run-id: only events of this type.")] = None,
    level: Annotated[str | None, typer.Option("--level", help="With --run-id: only events of this level.")] = None,
    lake: LakeOpt = None,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List runs (newest first), or show one run with its events (--run-id).

    Runs and events are found in the hot store and the lake alike; with --run-id the
    output says where the run and its events live (hot, lake, or split across both).
    The table's title says how many runs match (counted up to 1,000).
    """
    from magsag.cli.validate import check_id

    check_id(run_id, "--run-id")
    check_id(parent, "--parent")
    out_fmt = pick_format(fmt, json_out, (*TEXT_FORMATS, "parquet"))
    check_output(out_fmt, output)
    if tree and not run_id:
        raise ConfigError("--tree needs --run-id RUN (the root of the tree)")
    if parent and (run_id or agent or status or since or until):
        raise ConfigError("--parent lists one run's delegates: it takes no --run-id, --agent, --status or time filter")
    settings = settings_from(backend, db_path, dsn, lake_url=lake)
    if tree:
        _show_tree(run_id, settings, out_fmt, output)  # type: ignore[arg-type]
        return
    if parent:
        from magsag.lakehouse.run_tree import runs_by_parent

        runs = runs_by_parent(parent, settings, limit=10 if limit is None else limit)
        if out_fmt == "table":
            emit([_run_row(r) for r in runs], RUN_COLUMNS, "table", output, title=f"{len(runs)} runs of {parent}")
        else:
            emit_rows(runs, RUN_EXPORT_COLUMNS, out_fmt, output, value=runs)
        if not runs:
            raise typer.Exit(1)
        return
    since_dt, until_dt = parse_when(since, "--since"), parse_when(until, "--until")
    if status is not None:
        status = status.strip().lower()
        if status not in RUN_STATUSES:
            raise ConfigError(f"--status: {status!r} is not one of {', '.join(RUN_STATUSES)}")

    async def one() -> dict[str, Any]:
        async with open_storage(settings, read_only=True) as storage:
            found = await storage.get_run(run_id)  # type: ignore[arg-type]
            if found is None:
                raise NotFoundError(f"run {run_id!r} not found (in the hot store or the lake)")
            events = [
                e
                async for e in storage.get_events(
                    run_id,  # type: ignore[arg-type]
                    event_type=event_type,
                    level=level,
                    limit=limit,
                )
            ]
            counts = {"hot": 0, "lake": 0}
            for e in events:
                counts[e.get("tier", "hot")] = counts.get(e.get("tier", "hot"), 0) + 1
            tier_of = getattr(storage, "run_tier", None)
            run_tier = await tier_of(run_id) if tier_of is not None else "hot"
            where = "split" if counts["hot"] and counts["lake"] else ("lake" if counts["lake"] else run_tier)
            return {"run": found, "tier": {"run": run_tier, "events": counts, "where": where}, "events": events}

    wanted = 10 if limit is None else limit

    async def many() -> list[dict[str, Any]]:
        async with open_storage(settings, read_only=True) as storage:
            return await storage.list_runs(
                agent_slug=agent, status=status, since=since_dt, until=until_dt, limit=max(wanted, COUNT_CAP) + 1
            )

    if run_id:
        result = run(one())
        if out_fmt != "table":
            emit_rows(result["events"], EVENT_EXPORT_COLUMNS, out_fmt, output, value=result)
            return
        tier = result["tier"]
        print_kv(
            {
                **result["run"],
                "tier": f"{tier['where']} (run record: {tier['run']}; events: "
                f"{tier['events']['hot']} hot, {tier['events']['lake']} lake)",
            },
            title=f"run {run_id}",
        )
        print_table(result["events"], EVENT_COLUMNS, title=f"{len(result['events'])} events", widths={"msg": 90})
        return
    found = run(many())
    runs = found[:wanted]
    if out_fmt == "table":
        emit(
            [_run_row(r) for r in runs],
            RUN_COLUMNS,
            "table",
            output,
            title=count_title(len(runs), len(found), "runs", max(wanted, COUNT_CAP) + 1),
        )
    else:
        emit_rows(runs, RUN_EXPORT_COLUMNS, out_fmt, output, value=runs)
    if not runs:
        raise typer.Exit(1)


@command
def search(
    text: Annotated[
        str | None, typer.Argument(metavar="[QUERY]", help="Words (or, with --semantic, a description).")
    ] = None,
    agent: AgentOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most results.")] = 20,
    raw: Annotated[
        bool, typer.Option("--raw", help="Pass the backend's own query syntax through (FTS5 / websearch).")
    ] = False,
    semantic: Annotated[bool, typer.Option("--semantic", help="Rank by meaning (vectors) instead of words.")] = False,
    hybrid: Annotated[
        bool, typer.Option("--hybrid", help="Fuse word and vector rankings (reciprocal rank fusion).")
    ] = False,
    like: Annotated[
        str | None, typer.Option("--like", metavar="EVENT_ID", help="Events similar to this event.")
    ] = None,
    runs_like: Annotated[
        str | None, typer.Option("--runs-like", metavar="RUN_ID", help="Runs that failed or ran like this run.")
    ] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Only events of this type (semantic modes).")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Only events of this run (semantic modes).")] = None,
    lake: LakeOpt = None,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Search event messages in the hot store and the lake, best match first.

    By default full-text: the query is taken as plain words (all must appear) unless --raw
    is given. --semantic ranks events by meaning ("could not connect to the DB" finds
    "database connection refused"), --like EVENT_ID finds events like that one, --runs-like
    RUN_ID finds runs like that one, --hybrid fuses word and vector rankings; these need
    vectors (magsag data embed, docs/search.md). --since and --until limit which days of
    the lake are read. Each result says its tier; a word search's table title says how many
    events match (counted up to 1,000). Exit code 1 when nothing matches.
    """
    from magsag.backends.errors import ValidationError

    modes = [
        m
        for m, on in (("--semantic", semantic), ("--hybrid", hybrid), ("--like", like), ("--runs-like", runs_like))
        if on
    ]
    if len(modes) > 1:
        raise ValidationError(f"choose one of {', '.join(modes)}")
    mode = modes[0] if modes else "words"
    if mode in ("words", "--semantic", "--hybrid") and not (text and text.strip()):
        empty = "QUERY is empty: give the words to search for"
        raise ConfigError(empty if mode == "words" else f"{mode} needs a QUERY")
    if mode in ("--like", "--runs-like") and text:
        raise ValidationError(f"{mode} takes no QUERY")
    if raw and mode != "words":
        raise ValidationError(f"--raw is for word search, not {mode}")
    if mode == "words" and (event_type or run_id):
        raise ValidationError("--type and --run are for the semantic modes (--semantic, --hybrid, --like)")
    out_fmt = pick_format(fmt, json_out, (*TEXT_FORMATS, "parquet"))
    check_output(out_fmt, output)
    settings = settings_from(backend, db_path, dsn, lake_url=lake)
    since_dt, until_dt = parse_when(since, "--since"), parse_when(until, "--until")
    counted = max(limit, COUNT_CAP) + 1

    async def go() -> list[dict[str, Any]]:
        # word search opens the store read-only (it creates nothing); semantic modes may embed
        async with open_storage(settings, read_only=mode == "words") as storage:
            if mode == "words":
                return await storage.search_text(
                    text, agent_slug=agent, since=since_dt, limit=counted, raw=raw, until=until_dt
                )
            if mode == "--runs-like":
                return await storage.similar_runs(runs_like, limit=limit)
            if mode == "--hybrid":
                from magsag.backends.semantic import hybrid_search

                return await hybrid_search(
                    storage, text, agent_slug=agent, event_type=event_type, since=since_dt, until=until_dt, limit=limit
                )
            return await storage.search_similar(
                text=text if mode == "--semantic" else None,
                event_id=like,
                run_id=run_id,
                agent_slug=agent,
                event_type=event_type,
                since=since_dt,
                until=until_dt,
                limit=limit,
            )

    found = run(go())
    hits = found[:limit]
    if mode == "--runs-like":
        cols = ["score", "run_id", "agent_slug", "status", "started_at", "match_msg"]
        if out_fmt == "table":
            emit(hits, cols, "table", output, title=f"{len(hits)} runs like {runs_like}", widths={"match_msg": 80})
        else:
            emit_rows(hits, tuple(cols), out_fmt, output, value=hits)
    elif out_fmt == "table":
        cols = ["ts", "run_id", "agent_slug", "type", "level", "msg"]
        if mode != "words":
            cols.insert(0, "score")
        if any("tier" in h for h in hits):
            cols.append("tier")
        if mode == "words":
            title = f"{count_title(len(hits), len(found), 'matches', counted)} for {text!r}"
        else:
            title = f"{len(hits)} matches for {(text if text else f'event {like}')!r}"
        emit(hits, cols, "table", output, title=title, widths={"msg": 80})
    else:
        emit_rows(hits, SEARCH_EXPORT_COLUMNS, out_fmt, output, value=hits)
    if not hits:
        if mode != "words":
            err_console.print("no match: only embedded events are found; run `magsag data embed` (reports the backlog)")
        raise typer.Exit(1)


@command
def vacuum(
    hot_days: Annotated[
        int | None,
        typer.Option("--hot-days", min=0, help="Keep this many days (default: MAGSAG_STORAGE_HOT_DAYS or 7)."),
    ] = None,
    max_disk_mb: Annotated[
        float | None, typer.Option("--max-disk-mb", min=0, help="Also drop oldest whole days until the store fits.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be deleted.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Delete days that are not in the lake too (they then exist nowhere).")
    ] = False,
    lake: LakeOpt = None,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete hot runs and events older than the hot window (UTC midnight minus --hot-days).

    Runs still running, and their events, are kept. Days vacuum would delete that were
    never tiered to the lake are counted first: then nothing is deleted without --force
    (exit 1; `magsag data tier` moves them instead), and the dry run names them too. With
    MAGSAG_STORAGE_ARCHIVE_ENABLED=true days that are not archived yet are kept instead,
    and listed.
    """
    settings = settings_from(backend, db_path, dsn, hot_days=hot_days, lake_url=lake)

    async def go() -> dict[str, Any]:
        from magsag.lakehouse.tiering.destination import dest_key
        from magsag.storage import vacuum_storage

        async with open_storage(settings, read_only=dry_run) as storage:
            plan = await vacuum_storage(storage, settings, max_disk_mb=max_disk_mb, dry_run=True)
            days = sorted({date.fromisoformat(str(d)[:10]) for d in plan.get("days") or []})
            missing: list[date] = []
            if days and not settings.archive_enabled:  # (the archive guard keeps unarchived days itself)
                src = tier_source(storage)
                try:
                    missing = await src.unarchived_days(days, dest=dest_key(open_lake(settings.lake_url, settings)))
                finally:
                    await src.close()
            if dry_run or (missing and not force):
                plan["not_in_lake"] = [d.isoformat() for d in missing]
                plan["lake"] = settings.lake_url
                plan["refused"] = bool(missing and not dry_run)
                return plan
            result = await vacuum_storage(storage, settings, max_disk_mb=max_disk_mb, dry_run=False)
            result["not_in_lake"] = [d.isoformat() for d in missing]
            return result

    result = run(go())
    missing = result.get("not_in_lake") or []
    if json_out:
        print_json(result)
    elif not result.get("refused"):
        verb = "would delete" if dry_run else "deleted"
        runs_n = result.get("runs_to_delete", result.get("runs_deleted", 0))
        events_n = result.get("events_to_delete", result.get("events_deleted", 0))
        say(f"{verb} {runs_n} runs and {events_n} events older than {result['cutoff']}")
        if missing:
            say(
                f"note: {len(missing)} of these days are not in the lake {settings.lake_url} "
                f"({_days_text(missing)}): {'they would' if dry_run else 'they now'} exist nowhere else",
                err=True,
            )
    if result.get("refused"):
        raise fail(
            f"{len(missing)} of the days to delete are not in the lake {settings.lake_url} ({_days_text(missing)}): "
            "nothing deleted; run `magsag data tier` first, or vacuum --force to delete them anyway",
            1,
        )
    if result.get("refused_days"):
        raise fail(
            "not archived yet, kept: " + ", ".join(result["refused_days"]) + " (run `magsag data archive` first)", 1
        )


TREE_COLUMNS = ("run_id", "agent_slug", "parent_run_id", "status", "started_at", "duration_s", "cost_usd")
TREE_COLUMNS += ("total_cost_usd", "tokens", "total_tokens", "tier", "depth")
STATUS_STYLES = {"succeeded": "green", "failed": "red", "running": "yellow", "canceled": "dim"}


def _show_tree(run_id: str, settings: Any, out_fmt: str, output: Any) -> None:
    from rich.tree import Tree

    from magsag.storage import get_run_tree

    root = run(get_run_tree(run_id, settings))
    if out_fmt == "json":
        emit([], (), "json", output, value=root)
        return
    flat: list[dict[str, Any]] = []
    view = Tree(_tree_label(root), guide_style="dim")

    def walk(node: dict[str, Any], depth: int, branch: Any) -> None:
        flat.append({**{k: v for k, v in node.items() if k != "children"}, "depth": depth})
        here = branch.add(_tree_label(node)) if depth else branch
        for child in node["children"]:
            walk(child, depth + 1, here)

    walk(root, 0, view)
    if out_fmt != "table":
        emit_rows(flat, TREE_COLUMNS, out_fmt, output)
    elif output is None:
        console.print(view)
    else:
        with console.capture() as cap:
            console.print(view)
        write_text(cap.get(), output, "the tree")


def _tree_label(node: dict[str, Any]) -> Any:
    dur, cost, total = node.get("duration_s"), node.get("cost_usd"), node.get("total_cost_usd")
    money = "" if cost is None else f"  ${cost:.4f}"
    if cost is not None and total is not None and abs(total - cost) > 1e-9:
        money += f" (with delegates ${total:.4f})"
    return styled(
        (node["run_id"], "bold"),
        f"  {node.get('agent_slug')}  ",
        (str(node.get("status")), STATUS_STYLES.get(str(node.get("status")), "")),
        f"  {dur:.1f} s" if isinstance(dur, (int, float)) else "  (running)",
        money,
        f"  [{node.get('tier')}]",
    )


def _days_text(days: list[str]) -> str:
    return ", ".join(days) if len(days) <= 4 else f"{days[0]} .. {days[-1]}"


@command
def demo(
    days: Annotated[int, typer.Option("--days", min=1, max=3650, help="Spread activity over the last N days.")] = 30,
    runs_per_day: Annotated[int, typer.Option("--runs-per-day", min=1, help="MAG runs per day (each with SAGs).")] = 40,
    seed: Annotated[int, typer.Option("--seed", help="Same seed and window, same data (and same event ids).")] = 7,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            "--now",
            help="End of the window: ISO date/time or age like 1d (default: today's UTC midnight).",
        ),
    ] = None,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fill the store with realistic synthetic agent activity (MAG -> SAG delegations, MCP calls,
    tokens and cost, retries, failures, artifacts) over the N days before --until.

    The window ends at today's UTC midnight unless --until says otherwise, so the same
    seed, --days and --until give the same runs and event ids: running it again the same
    day adds nothing.
    """
    from magsag.ingest.demo import demo_end, load_demo

    settings = settings_from(backend, db_path, dsn)
    end = demo_end() if until is None else parse_when(until, "--until")
    total = days * runs_per_day

    async def go() -> Any:
        async with open_storage(settings) as storage:
            with Progress(
                TextColumn("[bold]demo[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("MAG runs"),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
                disable=json_out,
            ) as bar:
                task = bar.add_task("demo", total=total)
                return await load_demo(
                    storage,
                    days=days,
                    runs_per_day=runs_per_day,
                    seed=seed,
                    end=end,
                    progress=lambda n: bar.update(task, completed=n),
                )

    summary = run(go())
    out = {
        "runs": summary.runs,
        "events": summary.events,
        "new_events": summary.new_events,
        "from": summary.first,
        "to": summary.last,
        "backend": settings.backend,
        "db_path": str(settings.db_path) if settings.backend == "sqlite" else None,
    }
    if json_out:
        print_json(out)
    else:
        console.print(
            f"demo: {summary.runs} runs, {summary.events} events ({summary.new_events} new) "
            f"from {summary.first[:10] if summary.first else '?'} to {summary.last[:16] if summary.last else '?'}"
        )
