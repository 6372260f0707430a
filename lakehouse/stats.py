"""``magsag data stats``: what each tier holds, per partition (UTC day).

Hot store: rows and oldest/newest per day (from the store's own indexes), the store's
size (and per-day bytes on PostgreSQL, whose days are tables). Lake: files, rows, bytes,
oldest/newest from the manifest (or the files' footers for a lake without one), and
the compression ratio (uncompressed / stored bytes, from the Parquet footers). A lake
partition with several small files (fewer rows each than compaction's target) is
flagged: compacting it makes scans open fewer files.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from magsag.backends.base import StorageBackend
from magsag.backends.duckdb_ext import new_connection
from magsag.backends.duckdb_sql import sql_list
from magsag.backends.schema import US_PER_DAY, day_of_us, iso_from_us
from magsag.lakehouse.duckdb_lake import attach_lake, lake_extensions
from magsag.lakehouse.lakefiles import LakeFile, SnapshotReader
from magsag.lakehouse.objstore import Lake

SMALL_FILE_ROWS = 1_000_000  # compaction's target (magsag.lakehouse.compact.DEFAULT_TARGET_ROWS)
SMALL_FILES_MIN = 2


def _kind(hot: StorageBackend) -> str | None:
    for cls in type(hot).__mro__:
        if cls.__module__ == "magsag.backends.sqlite.store":
            return "sqlite"
        if cls.__module__ == "magsag.backends.postgres.store":
            return "postgres"
    return None


async def hot_stats(hot: StorageBackend) -> dict[str, Any]:
    """Totals and per-day rows of the hot store."""
    from magsag.lakehouse.tiered_backend import unwrap

    hot = unwrap(hot)
    info: dict[str, Any] = {"backend": hot.name}
    stats = getattr(hot, "stats", None)
    if stats is not None:
        total = await stats()
        info.update({k: total.get(k) for k in ("events", "runs", "bytes", "oldest", "newest")})
    kind = _kind(hot)
    days: dict[str, dict[str, Any]] = defaultdict(lambda: {"events": 0, "runs": 0})
    if kind == "sqlite":

        def q(c: Any) -> tuple[list[Any], list[Any]]:
            ev = c.execute(
                f"SELECT ts / {US_PER_DAY} AS d, count(*), min(ts), max(ts) FROM events GROUP BY d ORDER BY d"
            ).fetchall()
            rn = c.execute(f"SELECT started_at / {US_PER_DAY} AS d, count(*) FROM runs GROUP BY d").fetchall()
            return ev, rn

        ev, rn = await hot.read(q)  # type: ignore[attr-defined]
        sizes: dict[str, int] = {}
    elif kind == "postgres":
        s = hot.schema  # type: ignore[attr-defined]

        async def q_pg(c: Any) -> tuple[list[Any], list[Any], list[Any]]:
            day = "(extract(epoch FROM ts) * 1000000)::bigint / 86400000000"
            ev = await c.fetch(f"SELECT {day} AS d, count(*), min(ts), max(ts) FROM {s}.events GROUP BY d ORDER BY d")
            rday = day.replace("ts", "started_at")
            rn = await c.fetch(f"SELECT {rday} AS d, count(*) FROM {s}.runs GROUP BY d")
            sizes = await c.fetch(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
                f"{s}.events",
            )
            return [tuple(r) for r in ev], [tuple(r) for r in rn], [tuple(r) for r in sizes]

        ev, rn, raw_sizes = await hot.read(q_pg)  # type: ignore[attr-defined]
        from magsag.backends.postgres.schema import day_date, partition_day

        sizes = {}
        for name, size in raw_sizes:
            d = partition_day(name)
            if d is not None:
                sizes[day_date(d).isoformat()] = int(size)
    else:
        info["partitions"] = []
        return info
    for d, n, lo, hi in ev:
        key = day_of_us(int(d) * US_PER_DAY).isoformat()
        days[key].update(events=int(n), oldest=iso_from_us(int(lo)), newest=iso_from_us(int(hi)))
    for d, n in rn:
        days[day_of_us(int(d) * US_PER_DAY).isoformat()]["runs"] = int(n)
    parts = []
    for key in sorted(days):
        row = {"dt": key, **days[key]}
        if key in sizes:
            row["bytes"] = sizes[key]
        parts.append(row)
    info["partitions"] = parts
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
