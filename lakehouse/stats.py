"""``magsag data stats``: what each tier holds, per partition (UTC day).

Hot store: rows and oldest/newest per day and the store's size, from its ``day_stats``
capability (per-day bytes where the store keeps each day apart). Lake: files, rows, bytes,
oldest/newest from the manifest (or the files' footers for a lake without one), and
the compression ratio (uncompressed / stored bytes, from the Parquet footers). A lake
partition with several small files (fewer rows each than compaction's target) is
flagged: compacting it makes scans open fewer files.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from magsag.backends.base import StorageBackend
from magsag.backends.capabilities import has
from magsag.backends.duckdb_ext import new_connection
from magsag.backends.duckdb_sql import sql_list
from magsag.lakehouse.duckdb_lake import attach_lake, lake_extensions
from magsag.lakehouse.lakefiles import LakeFile, SnapshotReader
from magsag.lakehouse.objstore import Lake

SMALL_FILE_ROWS = 1_000_000  # compaction's target (magsag.lakehouse.compact.DEFAULT_TARGET_ROWS)
SMALL_FILES_MIN = 2


async def hot_stats(hot: StorageBackend) -> dict[str, Any]:
    """Totals and per-day rows of the hot store (its ``day_stats`` capability)."""
    from magsag.lakehouse.tiered_backend import unwrap

    hot = unwrap(hot)
    info: dict[str, Any] = {"backend": hot.name}
    stats = getattr(hot, "stats", None)
    if stats is not None:
        total = await stats()
        info.update({k: total.get(k) for k in ("events", "runs", "bytes", "oldest", "newest")})
    info["partitions"] = await hot.day_stats() if has(hot, "day_stats") else []  # type: ignore[attr-defined]
    return info


def _footer_sizes(lake: Lake, files: list[LakeFile]) -> dict[str, tuple[int, int, int]]:
    """uri -> (rows, stored bytes, uncompressed bytes) from the Parquet footers (one DuckDB query)."""
    if not files:
        return {}
    con = new_connection(extensions=lake_extensions(lake))
    try:
        attach_lake(con, lake)
        files_sql = sql_list([f.uri for f in files])
        rows = con.execute(
            "SELECT file_name, sum(total_compressed_size), sum(total_uncompressed_size) "
            f"FROM parquet_metadata({files_sql}) GROUP BY file_name"
        ).fetchall()
        counts = con.execute(f"SELECT file_name, num_rows FROM parquet_file_metadata({files_sql})").fetchall()
    finally:
        con.close()
    n = {r[0]: int(r[1]) for r in counts}
    return {r[0]: (n.get(r[0], 0), int(r[1]), int(r[2])) for r in rows}


def lake_stats(lake: Lake, *, footers: bool = True) -> dict[str, Any]:
    """Per dataset and partition: files, rows, bytes, oldest/newest, compression, small-file flag."""
    reader = SnapshotReader(lake)
    info: dict[str, Any] = {"url": lake.url, "exists": reader.exists()}
    if not info["exists"]:
        info.update(manifest=False, datasets={})
        return info
    snap = reader.snapshot()
    info["manifest"] = snap.from_manifest
    all_files = [f for fs in snap.files.values() for f in fs]
    try:
        sizes = _footer_sizes(lake, all_files) if footers or not snap.from_manifest else {}
    except Exception as exc:
        from magsag.lakehouse.lakecheck import diagnose

        diagnose(lake, all_files, exc)  # a damaged file: named, with the repair
        raise
    datasets: dict[str, Any] = {}
    for dataset, files in snap.files.items():
        by_day: dict[str, list[LakeFile]] = defaultdict(list)
        for f in files:
            by_day[f.day.isoformat()].append(f)
        parts = []
        for key in sorted(by_day):
            fs = by_day[key]
            rows = bytes_ = unc = 0
            for f in fs:
                r, b, u = sizes.get(f.uri, (f.rows or 0, f.bytes or 0, 0))
                rows += f.rows if f.rows is not None else r
                bytes_ += f.bytes if f.bytes is not None else b
                unc += u
            small = [f for f in fs if (f.rows if f.rows is not None else sizes.get(f.uri, (0,))[0]) < SMALL_FILE_ROWS]
            parts.append(
                {
                    "dt": key,
                    "files": len(fs),
                    "rows": rows,
                    "bytes": bytes_,
                    "oldest": min((f.min_ts for f in fs if f.min_ts), default=None),
                    "newest": max((f.max_ts for f in fs if f.max_ts), default=None),
                    "compression": round(unc / bytes_, 2) if unc and bytes_ else None,
                    "small_files": len(small) >= SMALL_FILES_MIN,
                }
            )
        datasets[dataset] = {
            "files": sum(p["files"] for p in parts),
            "rows": sum(p["rows"] for p in parts),
            "bytes": sum(p["bytes"] for p in parts),
            "partitions": parts,
            "oldest": parts[0]["dt"] if parts else None,
            "newest": parts[-1]["dt"] if parts else None,
            "flagged": [p["dt"] for p in parts if p["small_files"]],
        }
    info["datasets"] = datasets
    return info


async def data_stats(storage: StorageBackend, lake: Lake | None) -> dict[str, Any]:
    """Both tiers: ``{"hot": {...}, "lake": {...}}``."""
    import asyncio

    out: dict[str, Any] = {"hot": await hot_stats(storage)}
    if lake is not None:
        out["lake"] = await asyncio.to_thread(lake_stats, lake)
    return out
