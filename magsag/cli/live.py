"""``magsag data tail|serve``: watch events as they are committed; the HTTP server."""

from __future__ import annotations

import collections
import os
import sys
from typing import Annotated, Any

import orjson
import typer
from rich.text import Text

from magsag.cli.common import (
    AgentOpt,
    BackendOpt,
    DbPathOpt,
    DsnOpt,
    command,
    console,
    parse_when,
    run,
    settings_from,
)
from magsag.cli.render import safe
from magsag.storage import open_storage

EXIT_INTERRUPTED = 130
LEVEL_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "red", "critical": "bold red"}


def register(app: typer.Typer) -> None:
    app.command("tail")(tail)
    app.command("serve")(serve)


def event_line(e: dict[str, Any]) -> Text:
    """One event as one line: time, level, agent, run, type, message (colour by level)."""
    level = e.get("level") or "info"
    ts = str(e.get("ts") or "")
    when = f"{ts[:10]} {ts[11:23]}" if len(ts) >= 23 else ts
    msg = safe(e.get("msg") or "").replace("\n", "\\n")
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(safe(when), style="dim")
    line.append(safe(f"  {level.upper():<8}"), style=LEVEL_STYLES.get(level, "") or None)
    line.append(safe(f" {e.get('agent_slug', '')}  {e.get('run_id', '')}  {e.get('type', '')}  ").replace("\n", "\\n"))
    line.append(msg, style=LEVEL_STYLES.get(level, "") or None)  # a Text span: never read as markup
    return line


def _printer(json_out: bool) -> Any:
    if json_out:

        def write(e: dict[str, Any]) -> None:
            sys.stdout.buffer.write(orjson.dumps(e) + b"\n")
            sys.stdout.buffer.flush()

        return write

    def show(e: dict[str, Any]) -> None:
        console.print(event_line(e), soft_wrap=True)
        sys.stdout.flush()

    return show


@command
def tail(
    run_id: Annotated[str | None, typer.Option("--run-id", help="Only this run's events.")] = None,
    agent: AgentOpt = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Only events of this type (log, mcp.call, ...).")
    ] = None,
    level: Annotated[str | None, typer.Option("--level", help="Only events of this level (info, error, ...).")] = None,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="Show the last N matching events first (0: none).")
    ] = 10,
    since: Annotated[
        str,
        typer.Option("--since", help="How far back the last N are looked for: ISO date/time or age (7d, 12h, 30m)."),
    ] = "1h",
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing events as they are committed, until Ctrl-C.")
    ] = False,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (with its resume cursor).")
    ] = False,
) -> None:
    """Print the newest events, like `tail`; with --follow, keep printing them as they are committed.

    Events come in commit order from the hot store, one line each, coloured by level
    (--json: JSON lines, each with the `cursor` the API resumes from). Works across
    processes: an agent writing in another process shows up within the poll interval
    (SQLite: 0.25 s) or at once (PostgreSQL: LISTEN/NOTIFY). Exit codes: 0 done (or the
    output pipe closed), 2 bad option, 130 stopped with Ctrl-C.
    """
    settings = settings_from(backend, db_path, dsn)
    since_dt = parse_when(since, "--since")
    filters: dict[str, Any] = {"run_id": run_id, "agent_slug": agent, "event_type": event_type, "level": level}
    emit = _printer(json_out)

    async def go() -> None:
        async with open_storage(settings) as storage:
            last: collections.deque[dict[str, Any]] = collections.deque(maxlen=lines or 1)
            cursor = None
            async for e in storage.stream_events(**filters, since=since_dt, follow=False):
                last.append(e)
                cursor = e["cursor"]
            for e in list(last)[-lines:] if lines else []:
                emit(e)
            if not follow:
                return
            live = storage.stream_events(**filters, since=since_dt, cursor=cursor)
            async for e in live:
                emit(e)

    try:
        run(go())
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # `magsag data tail -f | head`: the reader left. Quiet, like coreutils' tail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None


@command
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (default: loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free port).")] = 8787,
    allow_writes: Annotated[
        bool,
        typer.Option(
            "--allow-writes", help="Accept writes (the OTLP receiver at /v1/traces, /v1/logs); read-only otherwise."
        ),
    ] = False,
    window: Annotated[
        str, typer.Option("--window", help="Trailing window of the agent-activity metrics (runs ended, cost): 1h, 24h.")
    ] = "1h",
    hot_size_limit_mb: Annotated[
        float | None,
        typer.Option(
            "--hot-size-limit-mb", min=0, help="Expose this hot-store size limit (the MagsagHotStoreTooLarge alert)."
        ),
    ] = None,
    clickhouse: Annotated[
        bool, typer.Option("--clickhouse", help="Also report the ClickHouse load lag (opens the engine per scrape).")
    ] = False,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    lake: Annotated[
        str | None,
        typer.Option("--lake", help="Lake root: a folder or s3://bucket/prefix (default: MAGSAG_STORAGE_LAKE_URL)."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level: info, warning, error.")] = "info",
) -> None:
    """Serve the store over HTTP: JSON API, Server-Sent Events, /metrics for Prometheus, /healthz.

    Endpoints: /api/runs, /api/runs/{id}, /api/runs/{id}/tree, /api/search, /api/metrics,
    /api/stream (SSE, resumable with Last-Event-ID), /metrics, /healthz, /openapi.json.
    With MAGSAG_SERVE_TOKEN set every endpoint but /healthz wants `Authorization: Bearer
    <token>`. Read-only unless --allow-writes. Stops on Ctrl-C or SIGTERM (exit 0).
    """
    from magsag.cli.lake import parse_every
    from magsag.serve import ServeConfig, serve_forever

    settings = settings_from(backend, db_path, dsn, lake_url=lake)
    config = ServeConfig(
        host=host,
        port=port,
        read_only=not allow_writes,
        token=os.environ.get("MAGSAG_SERVE_TOKEN") or None,
        window_s=parse_every(window) or 3600.0,
        log_level=log_level,
        hot_size_limit_bytes=int(hot_size_limit_mb * 1024 * 1024) if hot_size_limit_mb is not None else None,
        clickhouse=clickhouse or settings.clickhouse_url is not None,
    )
    serve_forever(settings, config)
