"""``magsag data export otel``: runs as OpenTelemetry traces to any OTLP/HTTP endpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from magsag.backends.errors import BackendUnavailable, ConfigError
from magsag.backends.schema import normalize_status
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
    fail,
    parse_when,
    print_json,
    print_kv,
    run,
    settings_from,
)
from magsag.cli.lake import EXIT_INTERRUPTED, _human, _stop_on_signals, parse_every
from magsag.cli.render import error

export_app = typer.Typer(name="export", help="Export runs to other systems (OpenTelemetry).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
    export_app.command("otel")(export_otel_command)


class _Bar:
    """A live line on stderr: runs, spans, bytes sent so far (the total is not known up front)."""

    def __init__(self, progress: Progress):
        self.p = progress
        self.task = progress.add_task("exporting", total=None, runs=0, spans=0, sent="0 B")
        self.runs = self.spans = self.bytes = 0

    def total(self, runs: int | None) -> None:
        pass

    def batch(self, runs: int, spans: int, sent_bytes: int) -> None:
        self.runs += runs
        self.spans += spans
        self.bytes += sent_bytes
        self.p.update(self.task, runs=self.runs, spans=self.spans, sent=_human(self.bytes))


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    cols = (
        SpinnerColumn(),
        TextColumn("{task.description}: {task.fields[runs]:,} runs, {task.fields[spans]:,} spans, {task.fields[sent]}"),
        TimeElapsedColumn(),
    )
    with Progress(*cols, console=err_console, transient=True) as p:
        yield _Bar(p)


def _print(rep: Any, json_out: bool) -> None:
    data = rep.as_dict()
    if json_out:
        print_json(data)
        return
    rows = {
        "endpoint": data["endpoint"],
        "project": data["project"],
        "runs": data["runs"],
        "spans": data["spans"],
        "span events": data["events"],
        "bytes sent (gzip)": _human(data["bytes"]),
        "batches": data["batches"],
        "seconds": data["seconds"],
    }
    if data["waiting_running"]:
        rows["still running (wait)"] = data["waiting_running"]
    if data["watermark"]:
        wm = data["watermark"]
        rows["watermark"] = f"{wm['ended_at']} {wm['run_id']}" if wm["run_id"] else "start"
    if data["rejected_spans"]:
        rows["rejected by the endpoint"] = f"{data['rejected_spans']} spans: {'; '.join(data['messages'])[:200]}"
    if data["stopped"]:
        rows["stopped"] = "by a signal, between batches"
    print_kv(rows, title="OpenTelemetry export")


@command
def export_otel_command(
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318 (/v1/traces is added) "
            "(default: MAGSAG_OTEL_ENDPOINT, then OTEL_EXPORTER_OTLP_ENDPOINT).",
        ),
    ] = None,
    project: Annotated[
        str, typer.Option("--project", help="Resource attribute openinference.project.name (Phoenix's project).")
    ] = "magsag",
    since: SinceOpt = None,
    until: UntilOpt = None,
    agent: AgentOpt = None,
    run_id: Annotated[
        list[str] | None,
        typer.Option("--run-id", help="Only this run (repeat for several); a sub-run joins its trace."),
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs with this status: succeeded, failed, canceled.")
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            metavar="INTERVAL",
            help="Keep running: every INTERVAL (1m, 30s) export the runs finished since the watermark;"
            " SIGTERM stops it between batches.",
        ),
    ] = None,
    incremental: Annotated[
        bool,
        typer.Option(
            "--incremental",
            help="Once: export the runs finished since the watermark and move it (for cron; --every implies it).",
        ),
    ] = False,
    batch_runs: Annotated[int, typer.Option("--batch-runs", min=1, max=10_000, help="Runs per OTLP request.")] = 200,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds per HTTP attempt.")] = 10.0,
    retries: Annotated[
        int,
        typer.Option(
            "--retries", min=0, max=20, help="Retries on 429/502/503/504 and connection errors (exponential backoff)."
        ),
    ] = 5,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export finished runs as OpenTelemetry traces (OTLP/HTTP protobuf, gzip) from every tier.

    A run is a span, its MCP calls and delegations are child spans, a delegated sub-run is a
    child of its delegation in the same trace, metrics are span attributes and logs are
    span events (docs/otel.md has every mapping). Ids are derived from run and event ids,
    so exporting again creates no second copy in a backend that upserts by id. Runs still
    running wait until they end. Headers for auth come from MAGSAG_OTEL_HEADERS
    (key=value,key2=value2) and are never printed. Exit codes: 0 done, 1 the endpoint
    refused or could not be reached (the watermark stays), 2 bad input, 130 stopped.
    """
    from magsag.otel.export import export_otel
    from magsag.otel.select import Selection
    from magsag.otel.transport import env_endpoint, env_headers

    url = endpoint or env_endpoint()
    if not url:
        raise ConfigError("--endpoint: no endpoint (pass --endpoint or set MAGSAG_OTEL_ENDPOINT)")
    if status is not None:
        normalize_status(status)
        if status == "running":
            raise ConfigError("--status: running runs are not exported (they wait until they end)")
    sel = Selection(
        since=parse_when(since, "--since"),
        until=parse_when(until, "--until"),
        agent=agent,
        status=status,
        run_ids=tuple(run_id or ()),
    )
    headers = env_headers()
    interval = parse_every(every)
    settings = settings_from(backend=backend, db_path=db_path, dsn=dsn)

    async def once(stop: Any, bar: Any) -> Any:
        from magsag.storage import open_storage

        async with open_storage(settings) as storage:
            return await export_otel(
                storage,
                url,
                headers=headers,
                selection=sel,
                project=project,
                batch_runs=batch_runs,
                continuous=incremental or interval is not None,
                timeout=timeout,
                retries=retries,
                progress=bar,
                stop=stop,
            )

    from magsag.otel.transport import EndpointRefused

    with _stop_on_signals() as stop:
        if interval is None:
            with _progress(not json_out and err_console.is_terminal) as bar:
                try:
                    rep = run(once(stop, bar))
                except BackendUnavailable as exc:
                    raise fail(str(exc).splitlines()[0], 1) from None
            _print(rep, json_out)
            if rep.stopped:
                raise typer.Exit(EXIT_INTERRUPTED)
            if rep.rejected_spans:
                raise typer.Exit(1)
            return
        while not stop.is_set():
            started = time.monotonic()
            try:
                with _progress(not json_out and err_console.is_terminal) as bar:
                    rep = run(once(stop, bar))
                _print(rep, json_out)
            except EndpointRefused as exc:
                raise fail(str(exc).splitlines()[0], 1) from None
            except BackendUnavailable as exc:  # unreachable: the watermark stayed, try again next time
                error(f"{str(exc).splitlines()[0]} (retrying in {interval:.0f}s)")
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
        console.print("stopped")
