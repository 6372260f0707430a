"""A claim's commit: its selection exported to the lake, its files committed, the claim
marked ``exported`` — resumable.

:func:`commit_claim` takes a claim in state ``claimed``:

1. for each planned dataset (events, then runs) whose file is not committed yet, drop what
   an interrupted attempt left (its staging area, an uncommitted final file), export the
   claim's selection, skip rows the destination partition already holds (keys read back
   from its committed files), write one sorted Parquet file, and
   :func:`~magsag.lakehouse.lakewriter.publish` it (verified from the store, then committed
   by its manifest entry). A committed file is never written again.
2. ``exported``: the ledger records the rows of every planned file (0: it had none); it
   refuses the mark unless each planned dataset is accounted for.

A claim already ``exported`` (or ``done``) is returned as it is. Every step is idempotent,
so the same function finishes a claim an earlier job left behind, whatever instant it was
killed at. Deletes and the finish come after every commit of the run
(:mod:`magsag.lakehouse.tiering.settle`). Blocking lake I/O runs in worker threads.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from magsag.backends.tiering.protocol import CLAIMED, EVENTS, RUNS, Claim, TierSource
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.faults import fault_point
from magsag.lakehouse.lakewriter import (
    KEY_COLUMNS,
    PartitionWriter,
    StagedFile,
    committed_entry,
    discard_staging,
    publish,
    read_keys,
)
from magsag.lakehouse.objstore import Lake, retry
from magsag.lakehouse.tiering.embed import EventVectors
from magsag.lakehouse.tiering.report import DayResult, TierProgress


@dataclass
class ClaimContext:
    """What :func:`commit_claim` (and the settle step) need besides the claim."""

    src: TierSource
    lake: Lake
    progress: TierProgress
    batch_rows: int = 32_768  # Arrow batches from the export; smaller batches, less memory in both processes
    delete_chunk_rows: int = 20_000
    row_group_rows: int = 122_880


async def commit_claim(ctx: ClaimContext, claim: Claim, *, recovered: bool = False) -> tuple[Claim, DayResult]:
    """Steps 1-2: the claim's files committed and the claim marked ``exported``."""
    res = DayResult(day=claim.day, batch_id=claim.batch_id, mode=claim.mode, recovered=recovered)
    res.hot_bytes = int(claim.info.get("hot_bytes") or 0)
    res.seconds = -time.monotonic()
    if claim.state != CLAIMED:
        done = claim.info.get("committed") or {}
        res.events, res.runs = int(done.get("events") or 0), int(done.get("runs") or 0)
        res.event_bytes = int(done.get("bytes") or 0)
        res.files = list(done.get("files") or [])
        res.seconds += time.monotonic()
        return claim, res
    await asyncio.to_thread(discard_staging, ctx.lake, claim.batch_id)
    fault_point("tier.staging_clean")
    counts: dict[str, Any] = {}
    rows: dict[str, int] = {}
    for dataset in (EVENTS, RUNS):
        rel = claim.files.get(dataset)
        if rel is None:
            continue
        ctx.progress.day(claim.day, f"export {dataset}")
        entry = await asyncio.to_thread(committed_entry, ctx.lake, rel)
        if entry is None:
            entry, dupes = await _export(ctx, claim, dataset, rel)
            counts[f"{dataset}_duplicates"] = dupes
            res.duplicates += dupes if dataset == EVENTS else 0
        rows[dataset] = 0 if entry is None else entry.rows
        if entry is not None:
            _count(res, dataset, entry)
            res.files.append(entry.path)
            ctx.progress.bytes(entry.bytes)
    claim = await ctx.src.mark_exported(
        claim,
        rows=rows,
        info={"committed": {"events": res.events, "runs": res.runs, "bytes": res.bytes, "files": res.files, **counts}},
    )
    fault_point("tier.exported")
    res.seconds += time.monotonic()
    return claim, res


def _count(res: DayResult, dataset: str, entry: manifest.ManifestEntry) -> None:
    if dataset == EVENTS:
        res.events, res.event_bytes = entry.rows, entry.bytes
    else:
        res.runs, res.run_bytes = entry.rows, entry.bytes


async def _export(ctx: ClaimContext, claim: Claim, dataset: str, rel: str) -> tuple[manifest.ManifestEntry | None, int]:
    """Write and commit the claim's rows of ``dataset``; (entry or None when no rows, duplicates)."""
    lake = ctx.lake
    await asyncio.to_thread(_remove_leftover, lake, rel)
    known = await asyncio.to_thread(partition_keys, lake, dataset, claim, exclude=set(claim.files.values()))
    hot = getattr(ctx.src, "backend", None)
    vectors = await EventVectors.open(hot) if dataset == EVENTS and hot is not None else None  # docs/search.md
    writer = await asyncio.to_thread(
        PartitionWriter,
        lake,
        dataset,
        claim.day,
        claim.batch_id,
        0,
        row_group_rows=ctx.row_group_rows,
        embedding=vectors.spec if vectors else None,
    )
    dupes = 0
    try:
        if dataset == EVENTS:
            async for batch in ctx.src.export_events(claim, batch_rows=ctx.batch_rows):
                batch, skipped = _drop_known(batch, "event_id", known)
                dupes += skipped
                if batch.num_rows:
                    if vectors is not None:
                        batch = await vectors.attach(batch)
                    await asyncio.to_thread(writer.write, batch)
                    ctx.progress.rows(batch.num_rows)
        else:
            table = await ctx.src.export_runs(claim)
            table, dupes = _drop_known(table, "run_id", known)
            if table.num_rows:
                await asyncio.to_thread(writer.write, table)
        if writer.rows == 0:
            writer.abort()
            fault_point(f"tier.{dataset}_empty")
            return None, dupes
        staged: StagedFile = await asyncio.to_thread(writer.finish)
    except BaseException:
        await asyncio.to_thread(writer.abort)
        raise
    fault_point(f"tier.{dataset}_staged")
    ctx.progress.day(claim.day, f"publish {dataset}")
    entry = await asyncio.to_thread(publish, lake, staged)
    fault_point(f"tier.{dataset}_published")
    return entry, dupes


def _remove_leftover(lake: Lake, rel: str) -> None:
    """Delete ``rel`` if an interrupted publish moved it into place but never committed it
    (the caller checked there is no entry): plain-glob readers must not see it."""
    path = lake.path(rel)
    if not lake.is_local:
        lake.fs.invalidate_cache(path)
    if retry(lake, f"checking {rel}", lake.fs.exists, path):
        retry(lake, f"deleting the uncommitted {rel}", lake.fs.rm_file, path)


def _drop_known(data: Any, column: str, known: pa.Array | None) -> tuple[Any, int]:
    if known is None or len(known) == 0 or data.num_rows == 0:
        return data, 0
    hit = pc.is_in(data.column(column), value_set=known)
    n = pc.sum(hit).as_py() or 0
    return (data.filter(pc.invert(hit)), n) if n else (data, 0)


def partition_keys(lake: Lake, dataset: str, claim: Claim, *, exclude: set[str]) -> pa.Array | None:
    """Keys (event_id / run_id) of every live committed file of the claim's partition,
    except ``exclude``; None when the partition is empty (the common case)."""
    where = layout.partition_dir(dataset, claim.day)
    entries = retry(lake, f"reading the manifest of {where}", _live, lake, dataset, claim)
    entries = [e for e in entries if e.path not in exclude]
    if not entries:
        return None
    key = KEY_COLUMNS[dataset][0]
    parts = [read_keys(lake, e.path).column(key) for e in entries]
    return pa.chunked_array(parts).combine_chunks() if parts else None


def _live(lake: Lake, dataset: str, claim: Claim) -> list[manifest.ManifestEntry]:
    if not lake.is_local:
        lake.fs.invalidate_cache(lake.path(layout.manifest_dir(dataset, claim.day)))
    return manifest.live_entries(lake, dataset, claim.day)


def planned_files(day: Any, batch_id: str) -> dict[str, str]:
    """The file names a claim plans (one per dataset, named after the claim's batch id)."""
    return {EVENTS: layout.data_path(EVENTS, day, batch_id, 0), RUNS: layout.data_path(RUNS, day, batch_id, 0)}
