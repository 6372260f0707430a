"""``magsag data embed`` and the semantic modes of ``magsag data search`` (docs/search.md)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from typing import Annotated, Any

import typer

from magsag.cli.common import (
    BackendOpt,
    DbPathOpt,
    DsnOpt,
    JsonOpt,
    command,
    console,
    err_console,
    print_json,
    print_kv,
    run,
    settings_from,
)
from magsag.storage import open_storage

NICE = 10  # CPU priority drop of `embed --every`


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)


async def embed_passes(
    settings: Any,
    *,
    batch: int,
    reset: bool,
    embedder: str | None,
    interval: float | None = None,
    stop: threading.Event | None = None,
    show: Any = None,
) -> dict[str, Any]:
    """One pass, or (``interval``) a pass every ``interval`` seconds on one open store until ``stop``."""
    from magsag.backends.embedding import load_embedder
    from magsag.backends.errors import StorageError
    from magsag.backends.vectors import embed_pending, vector_store

    async with open_storage(settings) as storage:
        emb = load_embedder(embedder)
        if reset:
            await vector_store(storage).reset()
        while True:
            started = time.monotonic()
            try:
                report = await embed_pending(storage, emb, batch=batch)
            except StorageError as exc:
                if interval is None:
                    raise
                err_console.print(f"[bold red]error:[/] {str(exc).splitlines()[0]} (retrying in {interval:.0f}s)")
                report = None
            if interval is None or stop is None:
                return report  # type: ignore[return-value]
            if report is not None and show is not None:
                show(report)
            wait = max(0.0, interval - (time.monotonic() - started))
            if await asyncio.to_thread(stop.wait, wait):
                return report or {}


@command
def embed(
    every: Annotated[
        str | None,
        typer.Option("--every", metavar="INTERVAL", help="Keep running: embed new events every INTERVAL (30s, 5m)."),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Events embedded per batch.")] = 4096,
    reset: Annotated[
        bool, typer.Option("--reset", help="Forget every stored vector first (after changing the embedder).")
    ] = False,
    embedder: Annotated[
        str | None,
        typer.Option(
            "--embedder", help="Embedder: wordllama, an entry point or module:attr (MAGSAG_STORAGE_EMBEDDER)."
        ),
    ] = None,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Embed hot events that have no vector yet (resumable), and report the backlog.

    Appends never wait for this: run it after ingest, from cron, or as a long-lived job with
    --every (which lowers its own CPU priority by 10, so ingest keeps the processor). Tiering
    then writes each event's vector into the lake. A PostgreSQL server without the pgvector
    extension is refused with the reason (exit 2).
    """
    settings = settings_from(backend, db_path, dsn)
    if every is None:
        report = run(embed_passes(settings, batch=batch, reset=reset, embedder=embedder))
        _show(report, json_out)
        return
    from magsag.cli.lake import parse_every

    interval = parse_every(every)
    assert interval is not None
    with contextlib.suppress(OSError):  # a background job: the appends it follows go first for the CPU
        os.nice(NICE)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(
        embed_passes(
            settings,
            batch=batch,
            reset=reset,
            embedder=embedder,
            interval=interval,
            stop=stop,
            show=lambda r: _show(r, json_out),
        )
    )
    err_console.print("stopped")


def _show(report: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(report)
    else:
        print_kv(report, title="embed")
        if report["backlog"]:
            console.print(f"{report['backlog']} events still wait for a vector")
