"""Tiering benchmark on PostgreSQL: ``magsag data tier`` against DuckDB's bare partitioned copy.

    python3 bench/tier.py --backend postgres [--events 1000000] [--engine duckdb|sqlite] [--json]
    python3 bench/tier_postgres.py [--events 1000000] [--dsn URL] [--engine ...] [--keep] [--json]

Setup (outside every timing): a fresh schema on the server (``--dsn``, else
``MAGSAG_TEST_PG_DSN``/``MAGSAG_STORAGE_DSN``, else the local default), demo activity over
the 30 days up to the same fixed "now" as ``bench/tier.py`` written through
``PostgresStorageBackend.append_events`` (the real schema: day partitions, GIN indexes,
tsvector), ``VACUUM ANALYZE``; then the sizes of what will move: the day partitions of
the tiered days (heap, indexes, TOAST) and the same events as compact JSONL (one
``event_record`` per line, as ``bench/tier.py`` counts it).

Each side runs in its own process, its peak memory measured over the process tree
(psutil, every 20 ms), on the same days (everything before the 7-day hot window):

* **bare**: DuckDB with the ``postgres_scanner`` extension (from the pip package),
  ``COPY (SELECT <canonical columns>, dt FROM postgres_scan(dsn, schema, 'events') WHERE ts
  < cutoff) TO dir (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (dt))``: no sort, no
  checks, nothing deleted. It runs first (it only reads; ours then moves the rows).
* **ours**: ``run_tier`` (move): per day freeze + claim, sorted export (parallel ctid scan
  of the partition), Parquet written, read back and verified, manifest commit, ledger,
  then the partition dropped. Reported up to the commit and end to end.

Ratio = ours / bare events per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import save  # noqa: E402
from magsag.backends.schema import EVENT_COLUMNS  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
HOT_DAYS = 7
END = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)  # the "now" of bench/tier.py


def default_dsn() -> str:
    return os.environ.get("MAGSAG_TEST_PG_DSN") or os.environ.get("MAGSAG_STORAGE_DSN") or DEFAULT_DSN


# ------------------------------------------------------------------- setup


async def setup(dsn: str, schema: str, events: int, seed: int = 7) -> dict[str, Any]:
    from magsag.backends.postgres.store import PostgresStorageBackend
    from magsag.backends.schema import hot_cutoff, to_us

    from magsag.ingest.demo import DemoGenerator, load_demo

    sample = list(DemoGenerator(days=1, runs_per_day=200, seed=seed, end=END))
    per_run = sum(len(b.events) for b in sample) / len(sample)
    runs_per_day = max(1, round(events / (30 * per_run)))
    t0 = time.monotonic()
    b = PostgresStorageBackend(dsn, schema=schema, pool_max=4)
    await b.initialize()
    try:
        summary = await load_demo(b, days=30, runs_per_day=runs_per_day, seed=seed, end=END, batch_events=20_000)
        cutoff = to_us(hot_cutoff(HOT_DAYS, END))
        pool = b._require()
        async with pool.acquire() as c:
            await c.execute(f"VACUUM ANALYZE {schema}.events")
            await c.execute(f"VACUUM ANALYZE {schema}.runs")
        parts = [p for p in await b.day_partitions() if p["day"] < hot_cutoff(HOT_DAYS, END).date().isoformat()]
        stats = await b.stats()
        jsonl, tier_events = await _jsonl(b, cutoff)
    finally:
        await b.close()
    return {
        "events": summary.events,
        "runs": summary.runs,
        "runs_per_day": runs_per_day,
        "schema": schema,
        "db_bytes": stats["bytes"],
        "bytes_label": "in PostgreSQL",
        "tier_partition_bytes": sum(p["bytes"] for p in parts),
        "now": END.isoformat(),
        "cutoff_us": cutoff,
        "tier_events": tier_events,
        "jsonl_bytes": jsonl,
        "setup_s": round(time.monotonic() - t0, 1),
    }


async def _jsonl(b: Any, cutoff_us: int) -> tuple[int, int]:
    """Bytes (and count) of the tierable events as compact JSONL, measured as they stream."""
    from magsag.backends.schema import event_record

    cols = ", ".join("payload::text" if c == "payload" else c for c in EVENT_COLUMNS)
    total = n = 0
    async with b._require().acquire() as c, c.transaction():
        async for row in c.cursor(f"SELECT {cols} FROM {b.schema}.events WHERE ts < $1 ORDER BY ts", cutoff_us):
            line = json.dumps(event_record(tuple(row)), ensure_ascii=False, separators=(",", ":")) + "\n"
            total += len(line.encode())
            n += 1
    return total, n


# ------------------------------------------------------------------ the sides


def child_bare(dsn: str, schema: str, cutoff_us: str, lake: str) -> dict[str, Any]:
    import duckdb
    from magsag.backends.postgres.tier_rows import postgres_scanner_path
    from magsag.backends.schema import iso_from_us

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD '{postgres_scanner_path()}'")
    con.execute("SET TimeZone = 'UTC'")
    cols = ", ".join("CAST(payload AS VARCHAR) AS payload" if c == "payload" else c for c in EVENT_COLUMNS)
    Path(lake).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    con.execute(
        f"COPY (SELECT {cols}, CAST(ts AS DATE) AS dt FROM postgres_scan('{dsn}', '{schema}', 'events') "
        f"WHERE ts < TIMESTAMPTZ '{iso_from_us(int(cutoff_us))}') "
        f"TO '{lake}/events' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (dt))"
    )
    seconds = time.monotonic() - t0
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{lake}/events/*/*.parquet')").fetchone()[0]
    return {"seconds": seconds, "events": rows, "bytes": _tree_bytes(Path(lake) / "events")}


def child_ours(dsn: str, schema: str, lake: str, engine: str) -> dict[str, Any]:
    from magsag.backends.allocator import lean_process
    from magsag.backends.postgres.store import PostgresStorageBackend
    from magsag.lakehouse.objstore import open_lake
    from magsag.lakehouse.tiering.job import run_tier
    from magsag.lakehouse.tiering.report import TierProgress

    class Phases(TierProgress):
        """Notes when the last day starts deleting: every file is committed by then."""

        def __init__(self) -> None:
            self.t0 = time.monotonic()
            self.last_delete = 0.0

        def day(self, day: Any, step: str) -> None:
            if step == "delete":
                self.last_delete = time.monotonic() - self.t0

    os.environ["MAGSAG_TIER_EXPORT_ENGINE"] = engine
    lean_process()  # as `magsag data tier` does
    phases = Phases()

    async def go() -> Any:
        async with PostgresStorageBackend(dsn, schema=schema, pool_max=4) as b:
            return await run_tier(b, open_lake(lake), hot_days=HOT_DAYS, now=END, progress=phases)

    t0 = time.monotonic()
    phases.t0 = t0
    rep = asyncio.run(go())
    seconds = time.monotonic() - t0
    d = rep.as_dict()
    return {
        "seconds": seconds,
        "job_seconds": d["seconds"],
        "commit_s": phases.last_delete or seconds,
        "events": d["events"],
        "runs": d["runs"],
        "days": d["days"],
        "bytes": d["bytes"],
        "event_bytes": sum(r.event_bytes for r in rep.days),
        "deleted_events": d["deleted_events"],
    }


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet"))


def run_child(args: list[str]) -> tuple[dict[str, Any], float]:
    """Run this script's ``--child ...``; return its JSON and the peak RSS (MB) of its process tree."""
    import psutil

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            top = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                total = top.memory_info().rss + sum(c.memory_info().rss for c in top.children(recursive=True))
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"bench child {args[:1]} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak / 2**20


# ------------------------------------------------------------------- driver


def bench(dsn: str, events: int, engine: str = "duckdb", keep: bool = False) -> dict[str, Any]:
    import asyncpg

    schema = f"bench_tier_{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="magsag-bench-pgtier-"))
    result: dict[str, Any] = {"backend": "postgres", "engine": engine}
    try:
        meta = asyncio.run(setup(dsn, schema, events))
        result["setup"] = meta
        bares = []
        for side in ("bare", "ours"):
            lake = work / f"{side}-{len(bares)}"
            if side == "bare":
                data, peak = run_child(["bare", dsn, schema, str(meta["cutoff_us"]), str(lake)])
                data["peak_rss_mb"] = round(peak)
                data["rows_per_s"] = round(data["events"] / data["seconds"])
                bares.append(data)
            else:
                data, peak = run_child(["ours", dsn, schema, str(lake), engine])
                data["peak_rss_mb"] = round(peak)
                data["rows_per_s"] = round(data["events"] / data["seconds"])
                result["ours"] = data
            shutil.rmtree(lake, ignore_errors=True)
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
    bare = bares[0]
    result["bare"] = bare
    ours = result["ours"]
    ours["export_rows_per_s"] = round(ours["events"] / max(1e-9, ours["commit_s"]))
    result["ratio_end_to_end"] = round(ours["rows_per_s"] / bare["rows_per_s"], 3)
    result["ratio_to_commit"] = round(ours["export_rows_per_s"] / bare["rows_per_s"], 3)
    result["sizes"] = {
        "jsonl_bytes": meta["jsonl_bytes"],
        "sqlite_bytes_share": meta["tier_partition_bytes"],  # the key bench/tier.py prints
        "share_label": "PostgreSQL day partitions",
        "lake_event_bytes": ours["event_bytes"],
        "lake_vs_jsonl": round(ours["event_bytes"] / meta["jsonl_bytes"], 4),
        "lake_vs_sqlite_share": round(ours["event_bytes"] / meta["tier_partition_bytes"], 4),
        "bare_vs_jsonl": round(bare["bytes"] / meta["jsonl_bytes"], 4),
    }
    return result


def bench_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of ``bench/tier.py --backend postgres`` (its ``--events/--engine/--keep``)."""
    return bench(getattr(args, "dsn", None) or default_dsn(), args.events, args.engine, args.keep)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        side, rest = argv[1], argv[2:]
        print(json.dumps(child_bare(*rest) if side == "bare" else child_ours(*rest)))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="demo events in the hot store (default 1,000,000)")
    p.add_argument("--dsn", default=default_dsn(), help="PostgreSQL server (a fresh schema is created and dropped)")
    p.add_argument("--engine", choices=("duckdb", "asyncpg", "sqlite"), default="duckdb", help="export engine")
    p.add_argument("--keep", action="store_true", help="keep the bench schema")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.events < 1:
        p.error("--events must be positive")
    result = bench_from_args(args)
    save("tier-postgres", result, command="python3 bench/tier_postgres.py " + " ".join(argv))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        sys.path.insert(0, str(ROOT / "bench"))
        from tier import show  # bench/tier.py prints both backends alike

        show(result, "python3 bench/tier_postgres.py " + " ".join(argv))
        o = result["ours"]
        print(f"{o['days']} days, {o['deleted_events']:,} events deleted (partitions dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
