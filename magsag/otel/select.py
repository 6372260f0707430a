"""Which runs to export: finished runs of every tier, in (``ended_at``, ``run_id``) order.

The order is a keyset: a batch ends at a key, the next batch starts after it, and the
continuous export keeps the last key as its watermark. Hot rows win over lake rows of the
same run (a day being tiered is briefly in both).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from magsag.backends.base import StorageBackend
from magsag.backends.capabilities import RunSelection, has
from magsag.backends.schema import run_record
from magsag.lakehouse.tiered_backend import TieredBackend

Key = tuple[int, str]  # (ended_at µs, run_id)
START: Key = (-(2**53), "")  # before any run (year 1684), inside every engine's timestamp range


#: ``--since/--until`` bound ``started_at`` (until exclusive), like ``data query``.
Selection = RunSelection


async def _hot_runs(hot: StorageBackend, sel: Selection, after: Key, limit: int) -> list[dict[str, Any]]:
    if has(hot, "finished_runs"):
        return await hot.finished_runs(sel, after, limit)  # type: ignore[attr-defined]
    return await _generic_runs(hot, sel, after, limit)


async def _generic_runs(store: StorageBackend, sel: Selection, after: Key, limit: int) -> list[dict[str, Any]]:
    """Any other backend: through the contract's ``list_runs`` (slower, same result)."""
    out: list[dict[str, Any]] = []
    offset, page = 0, 1000
    while True:
        rows = await store.list_runs(sel.agent, sel.status, sel.since, sel.until, page, offset)
        for r in rows:
            if r["status"] == "running" or not r.get("ended_at"):
                continue
            if sel.run_ids and r["run_id"] not in sel.run_ids:
                continue
            if key_of(r) > after:
                out.append(r)
        if len(rows) < page:
            break
        offset += page
    out.sort(key=key_of)
    return out[:limit]


def _lake_runs(storage: TieredBackend, sel: Selection, after: Key, limit: int) -> list[dict[str, Any]]:
    from magsag.backends.duckdb_ext import new_connection
    from magsag.backends.duckdb_sql import bind, sql_list
    from magsag.lakehouse.duckdb_lake import attach_lake, lake_extensions
    from magsag.lakehouse.lakefiles import SnapshotReader
    from magsag.lakehouse.lakeread import RUN_SELECT

    lake = storage.lake
    if lake is None:
        return []
    reader = SnapshotReader(lake)
    if not reader.exists():
        return []
    uris = [f.uri for f in reader.snapshot().of("runs")]
    if not uris:
        return []
    where, params = sel.where(lambda i: "?", after)
    where = [w.replace("ended_at", "epoch_us(ended_at)").replace("started_at", "epoch_us(started_at)") for w in where]
    source = f"read_parquet({sql_list(uris)}, hive_partitioning = true)"
    sql = (
        f"SELECT {RUN_SELECT} FROM {source} WHERE {' AND '.join(where)} "
        f"ORDER BY epoch_us(ended_at), run_id LIMIT {int(limit)}"
    )
    con = new_connection(extensions=lake_extensions(lake))
    try:
        attach_lake(con, lake)
        rows = con.execute(bind(sql, params)).fetchall()
    finally:
        con.close()
    return [run_record(r) for r in rows]


def key_of(run: dict[str, Any]) -> Key:
    from magsag.otel.outbound import us

    return (us(run["ended_at"]), run["run_id"])


async def finished_runs(storage: StorageBackend, sel: Selection, after: Key, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` finished runs after ``after`` in key order, from every tier."""
    if isinstance(storage, TieredBackend):
        hot = await _hot_runs(storage.hot, sel, after, limit)
        lake = await asyncio.to_thread(_lake_runs, storage, sel, after, limit)
    else:
        hot, lake = await _hot_runs(storage, sel, after, limit), []
    seen = {r["run_id"] for r in hot}
    merged = [*hot, *(r for r in lake if r["run_id"] not in seen)]
    merged.sort(key=key_of)
    return merged[:limit]


async def count_running(storage: StorageBackend, sel: Selection) -> int:
    """Runs of the selection still running (they wait until they end)."""
    if sel.status not in (None, "running"):
        return 0
    rows = await storage.list_runs(sel.agent, "running", sel.since, sel.until, 100_000, 0)
    return sum(1 for r in rows if not sel.run_ids or r["run_id"] in sel.run_ids)


def as_tuple(values: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(values or ())
