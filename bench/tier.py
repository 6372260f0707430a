"""Tiering benchmark: ``magsag data tier`` against DuckDB's bare partitioned copy of the same days.

    python3 bench/tier.py [--events 1000000] [--engine duckdb|sqlite] [--json]
    python3 bench/tier.py --events 10000000

Setup (cached under ``bench/out/``, outside every timing): demo activity (MAG runs
delegating to SAGs, MCP calls, metrics, errors; ``magsag.ingest.demo``) spread over the 30
days up to a fixed "now", written through ``SQLiteStorageBackend`` (FTS on, the real
schema), plus the same tiered events as raw JSONL (one ``event_record`` per line) to
measure what Parquet saves.

Each side runs in its own process on its own copy of the cached database, with its peak
memory measured over the whole process tree (psutil, sampled every 20 ms):

* **bare**: DuckDB ``COPY (SELECT *, dt FROM sqlite_scan(db, 'events') WHERE ts < cutoff)
  TO lake (FORMAT parquet, PARTITION_BY (dt))``: the same days, events only, no sorting,
  no verification, nothing deleted.
* **copy**: ``run_tier`` in copy mode (what ``magsag data archive`` does): claims, sorted
  export of events and runs, Parquet written, read back and verified from the store,
  manifest commits, the ledger; nothing deleted. The like-for-like comparison.
* **ours**: ``run_tier`` with the default hot window (7 days): the same, then the hot-store
  deletes. Reported both up to the commit (what
  the bare copy does) and end to end (with the deletes, which SQLite pays in index
  maintenance the copy never does). "To commit" is the time until every file is
  committed (the job deletes once, after the last commit: SQLite rebuilds its table).

Ratio = ours / bare events per second. ``--backend`` picks the hot store (``postgres`` is
added by the PostgreSQL tiering work through :data:`BACKENDS`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import save  # noqa: E402

OUT = ROOT / "bench" / "out"
HOT_DAYS = 7


# -------------------------------------------------------------------- setup


def _end() -> datetime:
    return datetime(2026, 3, 31, 12, 0, tzinfo=UTC)  # fixed, so the cache stays valid


def setup_sqlite(events: int, seed: int = 7) -> dict[str, Any]:
    """The cached SQLite store (and JSONL of its tierable events); built once per size."""
    OUT.mkdir(parents=True, exist_ok=True)
    db = OUT / f"tier-sqlite-{events}.db"
    meta_path = OUT / f"tier-sqlite-{events}.json"
    if db.exists() and meta_path.exists():
        return json.loads(meta_path.read_text())
    for p in OUT.glob(f"tier-sqlite-{events}.db*"):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    from magsag.backends.schema import hot_cutoff, to_us
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    from magsag.ingest.demo import DemoGenerator, load_demo

    sample = list(DemoGenerator(days=1, runs_per_day=200, seed=seed, end=_end()))
    per_run = sum(len(b.events) for b in sample) / len(sample)
    runs_per_day = max(1, round(events / (30 * per_run)))
    t0 = time.monotonic()

    async def load() -> Any:
        async with SQLiteStorageBackend(db) as b:
            return await load_demo(b, days=30, runs_per_day=runs_per_day, seed=seed, end=_end(), batch_events=50_000)

    summary = asyncio.run(load())
    cutoff = to_us(hot_cutoff(HOT_DAYS, _end()))
    jsonl_bytes, tier_events = _jsonl(db, cutoff)
    meta = {
        "events": summary.events,
        "runs": summary.runs,
        "runs_per_day": runs_per_day,
        "db": str(db),
        "db_bytes": db.stat().st_size,
        "now": _end().isoformat(),
        "cutoff_us": cutoff,
        "tier_events": tier_events,
        "jsonl_bytes": jsonl_bytes,
        "setup_s": round(time.monotonic() - t0, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def _jsonl(db: Path, cutoff_us: int) -> tuple[int, int]:
    """Bytes of the tierable events as JSONL (written to bench/out, then measured)."""
    import sqlite3

    from magsag.backends.schema import EVENT_COLUMNS, event_record

    path = OUT / (db.stem + ".jsonl")
    conn = sqlite3.connect(db)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        cur = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE ts < ? ORDER BY ts", (cutoff_us,))
        while rows := cur.fetchmany(50_000):
            for r in rows:
                f.write(json.dumps(event_record(r), ensure_ascii=False, separators=(",", ":")) + "\n")
            n += len(rows)
    conn.close()
    return path.stat().st_size, n


# ------------------------------------------------------------------ the sides


def child_bare(db: str, lake: str, cutoff_us: int) -> dict[str, Any]:
    import duckdb
    from magsag.backends.sqlite.tiering import sqlite_scanner_path

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD '{sqlite_scanner_path()}'")
    Path(lake).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    con.execute(
        f"COPY (SELECT *, strftime(make_timestamp(ts), '%Y-%m-%d') AS dt FROM sqlite_scan('{db}', 'events') "
        f"WHERE ts < {cutoff_us}) TO '{lake}/events' (FORMAT parquet, PARTITION_BY (dt))"
    )
    seconds = time.monotonic() - t0
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{lake}/events/*/*.parquet')").fetchone()[0]
    return {"seconds": seconds, "events": rows, "bytes": _tree_bytes(Path(lake) / "events")}


def child_ours(db: str, lake: str, now: str, engine: str, mode: str = "move") -> dict[str, Any]:
    from magsag.backends.allocator import lean_process
    from magsag.backends.sqlite.store import SQLiteStorageBackend
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
    lean_process()  # as `magsag data tier` / `archive` do
    phases = Phases()

    async def go() -> Any:
        async with SQLiteStorageBackend(db) as b:
            when = datetime.fromisoformat(now)
            return await run_tier(b, open_lake(lake), hot_days=HOT_DAYS, now=when, progress=phases, mode=mode)

    t0 = time.monotonic()
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
        "hot_bytes_est": d["hot_bytes"],
        "db_bytes_after": Path(db).stat().st_size,
    }


def child_writer(db: str, now: str, stop_file: str) -> dict[str, Any]:
    """Another process appending 1k events/s (``append_events`` of 10 every 10 ms, through
    the public API) until ``stop_file`` exists: latency of each call and failures."""
    from datetime import timedelta

    from magsag.backends.schema import Event
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    base = datetime.fromisoformat(now)
    lat: list[float] = []
    failures: list[str] = []

    async def go() -> None:
        async with SQLiteStorageBackend(db) as b:
            i = 0
            t_next = time.monotonic()
            while not os.path.exists(stop_file):
                ts = [base - timedelta(seconds=1, microseconds=i + k) for k in range(10)]
                batch = [Event.create(f"run-w{i // 1000}", "bench-writer", "log", t) for t in ts]
                t = time.monotonic()
                try:
                    await b.append_events(batch)
                except Exception as exc:  # what the agent would see
                    failures.append(str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
                lat.append(time.monotonic() - t)
                i += 10
                t_next += 0.01
                await asyncio.sleep(max(0.0, t_next - time.monotonic()))

    asyncio.run(go())
    lat.sort()

    def q(x: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(x * len(lat)))], 1) if lat else 0.0

    return {
        "calls": len(lat),
        "events": 10 * len(lat),
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "max_ms": round(1000 * lat[-1], 1) if lat else 0.0,
    }


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet"))


def run_child(args: list[str]) -> tuple[dict[str, Any], float]:
    """Run ``bench/tier.py --child ...``; return its JSON (with the main process's own peak
    RSS) and the peak RSS (MB) of its whole process tree (ours: the job + its export worker)."""
    import psutil

    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    peak = peak_top = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_top
        try:
            top = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                own = top.memory_info().rss
                total = own + sum(c.memory_info().rss for c in top.children(recursive=True) if c.is_running())
                peak, peak_top = max(peak, total), max(peak_top, own)
            except psutil.Error:
                pass
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"bench child {args[:2]} failed:\n{err[-3000:]}")
    data = json.loads(out.strip().splitlines()[-1])
    data["peak_rss_main_mb"] = round(peak_top / 2**20)
    return data, peak / 2**20


# ------------------------------------------------------------------- driver


def bench_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    meta = setup_sqlite(args.events)
    work = OUT / "tier-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result: dict[str, Any] = {"backend": "sqlite", "setup": meta, "engine": args.engine}
    for side in ("bare", "copy", "ours"):
        db = work / f"{side}.db"
        shutil.copyfile(meta["db"], db)
        lake = work / f"{side}-lake"
        if side == "bare":
            data, peak = run_child(["--child", "bare", str(db), str(lake), str(meta["cutoff_us"])])
        else:
            mode = "copy" if side == "copy" else "move"
            writer = None
            stop = work / "writer.stop"
            if side == "ours" and args.writer:  # another process appends while the job runs
                stop.unlink(missing_ok=True)
                writer = subprocess.Popen(
                    [sys.executable, __file__, "--child", "writer", str(db), meta["now"], str(stop)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
                time.sleep(2)  # the writer is open and appending before the job starts
            data, peak = run_child(["--child", "ours", str(db), str(lake), meta["now"], args.engine, mode])
            if writer is not None:
                stop.touch()
                out, err = writer.communicate(timeout=120)
                if writer.returncode != 0:
                    raise SystemExit(f"bench writer failed:\n{err[-3000:]}")
                data["writer"] = json.loads(out.strip().splitlines()[-1])
        data["peak_rss_mb"] = round(peak)
        data["rows_per_s"] = round(data["events"] / data["seconds"])
        result[side] = data
        if not args.keep:
            for p in work.glob(f"{side}.db*"):
                p.unlink() if p.is_file() else shutil.rmtree(p)
    ours, bare = result["ours"], result["bare"]
    ours["export_rows_per_s"] = round(ours["events"] / max(1e-9, ours["commit_s"]))
    result["ratio_end_to_end"] = round(ours["rows_per_s"] / bare["rows_per_s"], 3)
    result["ratio_to_commit"] = round(ours["export_rows_per_s"] / bare["rows_per_s"], 3)
    result["ratio_copy"] = round(result["copy"]["rows_per_s"] / bare["rows_per_s"], 3)
    tier_share = meta["tier_events"] / meta["events"]
    result["sizes"] = {
        "jsonl_bytes": meta["jsonl_bytes"],
        "sqlite_bytes_share": round(meta["db_bytes"] * tier_share),
        "lake_event_bytes": ours["event_bytes"],
        "lake_vs_jsonl": round(ours["event_bytes"] / meta["jsonl_bytes"], 4),
        "lake_vs_sqlite_share": round(ours["event_bytes"] / (meta["db_bytes"] * tier_share), 4),
        "bare_vs_jsonl": round(bare["bytes"] / meta["jsonl_bytes"], 4),
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def bench_postgres(args: argparse.Namespace) -> dict[str, Any]:
    """``--backend postgres``: bench/tier_postgres.py (same days, same sides, PostgreSQL hot store)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import tier_postgres

    return tier_postgres.bench_from_args(args)


BACKENDS = {"sqlite": bench_sqlite, "postgres": bench_postgres}


def show(r: dict[str, Any], command: str) -> None:
    m, o, b, s = r["setup"], r["ours"], r["bare"], r["sizes"]
    print(f"$ {command}")
    print(
        f"hot store: {r['backend']}, {m['events']:,} events / {m['runs']:,} runs over 30 days, "
        f"{m['db_bytes'] / 1e6:,.0f} MB {m.get('bytes_label', 'file')}; "
        f"tiered (7 hot days): {m['tier_events']:,} events"
    )
    print(f"{'':24}{'events/s':>12}{'seconds':>10}{'peak RSS MB':>13}{'Parquet MB':>12}")
    print(
        f"{'DuckDB bare COPY':24}{b['rows_per_s']:>12,}{b['seconds']:>10.2f}{b['peak_rss_mb']:>13,}"
        f"{b['bytes'] / 1e6:>12.1f}"
    )
    c = r.get("copy")  # the PostgreSQL bench runs no copy side
    if c is not None:
        print(
            f"{'magsag archive (copy)':24}{c['rows_per_s']:>12,}{c['seconds']:>10.2f}{c['peak_rss_mb']:>13,}"
            f"{c['event_bytes'] / 1e6:>12.1f}"
        )
    print(
        f"{'magsag tier (to commit)':24}{o['export_rows_per_s']:>12,}{o['commit_s']:>10.2f}"
        f"{o['peak_rss_mb']:>13,}{o['event_bytes'] / 1e6:>12.1f}"
    )
    print(f"{'magsag tier (end to end)':24}{o['rows_per_s']:>12,}{o['seconds']:>10.2f}")
    print(f"  the last {o['seconds'] - o['commit_s']:.2f} s: hot-store deletes after every file was committed")
    w = o.get("writer")
    if w:
        print(
            f"  concurrent writer (1k events/s, append_events of 10): {w['calls']:,} calls, p50 {w['p50_ms']} ms, "
            f"p99 {w['p99_ms']} ms, max {w['max_ms']} ms, {w['failures']} failed"
            + (f" ({w['first_failure']})" if w["failures"] else "")
        )
    if "peak_rss_main_mb" in o:
        print(f"  peak RSS of the job's own process {o['peak_rss_main_mb']} MB (the rest: its DuckDB export worker)")
    copy = f"copy (verified, exactly once, no deletes) {r['ratio_copy']:.2f}x; " if "ratio_copy" in r else ""
    print(
        f"ratio ours/bare: {copy}tier "
        f"{r['ratio_to_commit']:.2f}x up to the last commit, {r['ratio_end_to_end']:.2f}x end to end"
    )
    print(
        f"lake events {s['lake_event_bytes'] / 1e6:.1f} MB = {s['lake_vs_jsonl']:.3f} of JSONL "
        f"({s['jsonl_bytes'] / 1e6:.0f} MB), {s['lake_vs_sqlite_share']:.3f} of their "
        f"{s.get('share_label', 'SQLite share')} "
        f"({s['sqlite_bytes_share'] / 1e6:.0f} MB); bare copy {s['bare_vs_jsonl']:.3f} of JSONL"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        side, rest = argv[1], argv[2:]
        if side == "writer":
            data = child_writer(*rest)
        else:
            data = child_bare(rest[0], rest[1], int(rest[2])) if side == "bare" else child_ours(*rest)
        print(json.dumps(data))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backend", choices=sorted(BACKENDS), default="sqlite")
    p.add_argument("--events", type=int, default=1_000_000, help="demo events in the hot store (default 1,000,000)")
    p.add_argument("--engine", choices=("duckdb", "sqlite"), default="duckdb", help="SQLite export engine")
    p.add_argument("--keep", action="store_true", help="keep bench/out/tier-work (the copies and lakes)")
    p.add_argument(
        "--writer", action="store_true", help="another process appends 1k events/s during the tier job (its latency)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    result = BACKENDS[args.backend](args)
    engine = "" if args.engine == "duckdb" or args.backend != "sqlite" else f"-{args.engine}"
    save(f"tier-{args.backend}{engine}", result, command="python3 bench/tier.py " + " ".join(argv))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        show(result, "python3 bench/tier.py " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
