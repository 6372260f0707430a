"""Tiering benchmark on PostgreSQL: ``magsag data tier`` against DuckDB's bare partitioned copy.

    python3 bench/tier_postgres.py [--events 1000000] [--dsn URL] [--keep] [--json]
    (also ``python3 bench/tier.py --backend postgres ...``)

Setup (not timed): a fresh schema, ``--events`` demo events over 30 days loaded through
``append_events`` (the demo generator: MAG runs delegating to SAGs, runs recorded too),
``VACUUM ANALYZE``. Sizes of what will move: the day partitions in PostgreSQL (heap,
indexes, TOAST) and the same events as raw JSONL (one canonical record per line).

Then, each in its own process (so each peak RSS is its own), same days (every complete
UTC day before today):

1. **bare**: DuckDB with the ``postgres_scanner`` extension (from the pip package) doing
   ``COPY (SELECT <canonical columns>, dt FROM postgres_scan(...) WHERE ts < cutoff) TO
   <dir> (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (dt))``: no sort, no checks.
2. **ours**: ``run_tier`` moving the same days into a local lake: per day freeze + claim,
   export sorted, write, read back and verify, commit the manifest entry, drop the
   partition, finish the claim.

Bare runs first (it only reads), so both meet a warm cache. Ratio = ours / bare rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.schema import EVENT_COLUMNS  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.parquet"))


# ------------------------------------------------------------------- setup


async def setup(dsn: str, schema: str, events: int, seed: int) -> dict[str, Any]:
    from backends.postgres import PostgresStorageBackend
    from magsag.ingest.demo import DemoGenerator, load_demo

    end = datetime.now(UTC).replace(second=0, microsecond=0)
    sample = list(DemoGenerator(days=1, runs_per_day=200, seed=seed, end=end))
    per_run = sum(len(b.events) for b in sample) / len(sample)
    per_day = max(1, round(events / (30 * per_run)))
    b = PostgresStorageBackend(dsn, schema=schema, pool_max=4)
    await b.initialize()
    try:
        t = time.perf_counter()
        summary = await load_demo(b, days=30, runs_per_day=per_day, seed=seed, end=end, batch_events=20_000)
        load_s = time.perf_counter() - t
        cutoff = datetime(end.year, end.month, end.day, tzinfo=UTC)
        s = schema

        async def sizes(c: Any) -> dict[str, Any]:
            await c.execute(f"VACUUM ANALYZE {s}.events")
            await c.execute(f"VACUUM ANALYZE {s}.runs")
            parts = await b.day_partitions()
            old = [p for p in parts if p["day"] < cutoff.date().isoformat()]
            n = await c.fetchval(f"SELECT count(*) FROM {s}.events WHERE ts < $1", int(cutoff.timestamp() * 1e6))
            heap = await c.fetchval(
                "SELECT coalesce(sum(pg_relation_size(to_regclass(t))), 0) FROM unnest($1::text[]) t",
                [p["table"] for p in old],
            )
            return {"old_events": int(n), "pg_bytes": sum(p["bytes"] for p in old), "pg_heap_bytes": int(heap)}

        out = await sizes_with(b, sizes)
        out["jsonl_bytes"] = await jsonl_bytes(b, cutoff)
        out.update(loaded_events=summary.new_events, runs=summary.runs, load_s=load_s, cutoff=cutoff.isoformat())
        return out
    finally:
        await b.close()


async def sizes_with(b: Any, fn: Any) -> Any:
    pool = b._require()
    async with pool.acquire() as c:
        return await fn(c)


async def jsonl_bytes(b: Any, cutoff: datetime) -> int:
    """Bytes of the moved events as raw JSONL: one canonical record (``event_record``) per line."""
    from backends.schema import event_record

    cols = ", ".join("payload::text" if c == "payload" else c for c in EVENT_COLUMNS)
    total = 0
    pool = b._require()
    async with pool.acquire() as c, c.transaction():
        cur = c.cursor(f"SELECT {cols} FROM {b.schema}.events WHERE ts < $1", int(cutoff.timestamp() * 1e6))
        async for row in cur:
            total += len(json.dumps(event_record(tuple(row)), ensure_ascii=False).encode()) + 1
    return total


# ------------------------------------------------------------------ children


def child_bare(dsn: str, schema: str, cutoff: str, out: str) -> dict[str, Any]:
    import duckdb

    from backends.postgres_tier_export import postgres_scanner_path

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD '{postgres_scanner_path()}'")
    con.execute("SET TimeZone = 'UTC'")
    cols = ", ".join("CAST(payload AS VARCHAR) AS payload" if c == "payload" else c for c in EVENT_COLUMNS)
    sql = (
        f"COPY (SELECT {cols}, CAST(ts AS DATE) AS dt FROM postgres_scan('{dsn}', '{schema}', 'events') "
        f"WHERE ts < TIMESTAMPTZ '{cutoff}') TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (dt))"
    )
    t = time.perf_counter()
    rows = con.execute(sql).fetchone()[0]
    seconds = time.perf_counter() - t
    return {"rows": int(rows), "seconds": seconds, "bytes": dir_bytes(Path(out)), "rss_mb": rss_mb()}


async def child_ours(dsn: str, schema: str, out: str) -> dict[str, Any]:
    from backends.postgres import PostgresStorageBackend
    from lakehouse.objstore import open_lake
    from lakehouse.tiering import run_tier

    b = PostgresStorageBackend(dsn, schema=schema, pool_max=4)
    await b.initialize()
    try:
        lake = open_lake(out)
        t = time.perf_counter()
        report = await run_tier(b, lake, hot_days=0)
        seconds = time.perf_counter() - t
    finally:
        await b.close()
    return {
        "rows": report.events,
        "runs": report.runs,
        "days": len(report.days),
        "seconds": seconds,
        "bytes": dir_bytes(Path(out) / "events"),
        "run_bytes": dir_bytes(Path(out) / "runs"),
        "deleted_events": sum(d.deleted_events for d in report.days),
        "rss_mb": rss_mb(),
    }


def run_child(*args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------- main


def bench(dsn: str, events: int, seed: int, keep: bool) -> dict[str, Any]:
    import asyncpg

    schema = f"bench_tier_{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="magsag-bench-tier-"))
    try:
        info = asyncio.run(setup(dsn, schema, events, seed))
        bare = run_child("bare", dsn, schema, info["cutoff"], str(work / "bare"))
        ours = run_child("ours", dsn, schema, str(work / "lake"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not keep:

            async def drop() -> None:
                conn = await asyncpg.connect(dsn)
                try:
                    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                finally:
                    await conn.close()

            asyncio.run(drop())
    rate = {k: v["rows"] / v["seconds"] if v["seconds"] else 0.0 for k, v in (("ours", ours), ("bare", bare))}
    return {
        "schema": schema,
        "setup": info,
        "bare": {**bare, "rows_per_s": rate["bare"]},
        "ours": {**ours, "rows_per_s": rate["ours"]},
        "ratio": rate["ours"] / rate["bare"] if rate["bare"] else None,
        "ours_vs_jsonl": ours["bytes"] / info["jsonl_bytes"] if info["jsonl_bytes"] else None,
        "bare_vs_jsonl": bare["bytes"] / info["jsonl_bytes"] if info["jsonl_bytes"] else None,
        "ours_vs_pg": ours["bytes"] / info["pg_bytes"] if info["pg_bytes"] else None,
    }


def show(r: dict[str, Any], command: str) -> None:
    s, o, b = r["setup"], r["ours"], r["bare"]
    mb = 1024 * 1024
    print(command)
    print(
        f"setup: {s['loaded_events']:,} events, {s['runs']:,} runs loaded in {s['load_s']:.1f}s; "
        f"{s['old_events']:,} events before {s['cutoff'][:10]}"
    )
    print(
        f"sizes of the moved days: PostgreSQL {s['pg_bytes'] / mb:.1f} MB (heap {s['pg_heap_bytes'] / mb:.1f} MB), "
        f"JSONL {s['jsonl_bytes'] / mb:.1f} MB"
    )
    print(f"{'':34}{'rows':>10}{'seconds':>9}{'rows/s':>10}{'peak RSS':>10}{'Parquet MB':>12}{'/JSONL':>8}")
    for name, v, ratio in (
        ("ours (run_tier, move + verify)", o, r["ours_vs_jsonl"]),
        ("bare DuckDB postgres_scan COPY", b, r["bare_vs_jsonl"]),
    ):
        print(
            f"{name:34}{v['rows']:>10,}{v['seconds']:>9.2f}{v['rows_per_s']:>10,.0f}{v['rss_mb']:>8.0f}MB"
            f"{v['bytes'] / mb:>12.2f}{ratio:>8.3f}"
        )
    print(
        f"ratio ours/bare rows/s: {r['ratio']:.2f}; our lake = {r['ours_vs_jsonl']:.3f} of JSONL, "
        f"{r['ours_vs_pg']:.3f} of the PostgreSQL partitions; runs file {o['run_bytes'] / mb:.2f} MB; "
        f"{o['days']} days, {o['deleted_events']:,} events deleted (partitions dropped)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        role, *rest = argv[1:]
        result = child_bare(*rest) if role == "bare" else asyncio.run(child_ours(*rest))
        print(json.dumps(result))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="demo events to load (default 1,000,000)")
    p.add_argument(
        "--dsn",
        default=os.environ.get("MAGSAG_TEST_PG_DSN") or os.environ.get("MAGSAG_STORAGE_DSN") or DEFAULT_DSN,
        help="PostgreSQL server (a fresh schema is created and dropped)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the bench schema")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.events < 1:
        p.error("--events must be positive")
    result = bench(args.dsn, args.events, args.seed, args.keep)
    command = "python3 bench/tier_postgres.py " + " ".join(argv)
    if args.json:
        print(json.dumps({"command": command, **result}, indent=2))
    else:
        show(result, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
