"""Benchmark: import a generated legacy ``.runs/agents`` tree into SQLite.

    python bench/migrate.py                      # 10k runs, 1M records (about a minute)
    python bench/migrate.py --runs 1000 --lines 100000 --profile

Generates a tree in the legacy format (MAG runs delegating to SAG runs; ``logs.jsonl``,
``mcp_calls.jsonl``, ``metrics.json``, ``summary.json``), then in the same run:

1. ``magsag.ingest.import_legacy`` into a fresh SQLite store (the default backend, FTS on),
   timed until the store is closed (everything durable);
2. the bare baseline: every record read, ``json.loads``-ed, turned into a row and inserted
   with one ``executemany`` (one transaction, same schema: same indexes, same FTS index)
   into another fresh file; the time of the ``executemany`` alone is printed too: it is
   the most any importer can reach through this schema on this machine;

and prints events/s of both and their ratio. A second import of the same tree (nothing
new) is timed too.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import save
from magsag.backends.sqlite import schema as ddl
from magsag.backends.sqlite.store import SQLiteStorageBackend

from magsag.ingest import import_legacy

_ERRORS = ["RateLimitError: 429 Too Many Requests", "TimeoutError: upstream timed out", "ValueError: bad plan"]
_TOOLS = [("pg", "query"), ("github", "search_issues"), ("fs", "read_file"), ("http", "fetch")]


def _span(rng: random.Random) -> str:
    return f"span-{rng.getrandbits(64):016x}"


def generate(root: Path, runs: int, lines: int, seed: int = 7) -> int:
    """Write ``runs`` run folders holding ``lines`` records in all; return the record count."""
    rng = random.Random(seed)
    per_run = lines // runs
    n_metrics, n_mcp = 5, max(0, per_run // 7)
    n_logs = per_run - n_metrics - n_mcp
    t0 = 1_760_000_000.0
    total = 0
    mag = None
    for i in range(runs):
        is_mag = i % 4 == 0
        run_id = f"mag-{i:08x}" if is_mag else f"sag-{i:08x}"
        slug = "offer-orchestrator-mag" if is_mag else "compensation-advisor-sag"
        if is_mag:
            mag = run_id
        d = root / run_id
        d.mkdir(parents=True)
        span = _span(rng)
        ts = t0 + i * 30.0
        out = []
        start = {"agent": "OfferOrchestratorMAG" if is_mag else "CompensationAdvisorSAG", "slug": slug}
        if not is_mag:
            start.update(parent_run_id=mag, task_id=f"t{i % 4}")
        body = [("start", start)]
        for k in range(n_logs - 2):
            r = rng.random()
            if is_mag and r < 0.3:
                body.append(
                    ("delegation_start", {"sag": "compensation-advisor-sag", "task_id": f"t{k}", "run_id": f"sag-{k}"})
                )
            elif r < 0.05:
                body.append(("retry", {"attempt": 1 + k % 3, "error": rng.choice(_ERRORS)}))
            elif r < 0.5:
                body.append(("engine.event", {"step": k, "detail": f"token batch {k}", "tokens": rng.randint(1, 900)}))
            else:
                body.append(("skill_invoked", {"skill": "salary-band", "args": {"level": rng.randint(1, 9)}}))
        failed = i % 10 == 9
        if failed:
            body.append(("error", {"error": rng.choice(_ERRORS), "type": "RateLimitError"}))
        else:
            body.append(("end", {"status": "success", "duration_ms": 3400, "cost_usd": 0.0042, "tokens": 1312}))
        for name, data in body:
            ts += 0.001 + rng.random() / 100
            out.append(json.dumps({"run_id": run_id, "event": name, "timestamp": ts, "data": data, "span_id": span}))
        (d / "logs.jsonl").write_text("\n".join(out) + "\n")
        mcp = []
        for _ in range(n_mcp):
            server, tool = rng.choice(_TOOLS)
            rec = {
                "run_id": run_id,
                "timestamp": ts + rng.random(),
                "server_id": server,
                "tool": tool,
                "status": "success" if rng.random() > 0.1 else "error",
                "transport": "stdio",
                "latency_ms": rng.randint(5, 900),
                "arguments": {"sql": "***"},
            }
            mcp.append(json.dumps(rec))
        if mcp:
            (d / "mcp_calls.jsonl").write_text("\n".join(mcp) + "\n")
        names = ["duration_ms", "cost_usd", "tokens", "latency_ms", "task_count"]
        metrics = {
            n: [{"run_id": run_id, "value": rng.randint(1, 5000), "timestamp": ts + j}] for j, n in enumerate(names)
        }
        (d / "metrics.json").write_text(json.dumps(metrics, indent=2))
        summary = {"run_id": run_id, "total_logs": len(out), "metrics": metrics, "run_dir": str(d), "slug": slug}
        (d / "summary.json").write_text(json.dumps(summary, indent=2))
        total += len(out) + len(mcp) + n_metrics
    return total


async def ours(tree: Path, db: Path, profile: bool, workers: int | None) -> tuple[float, int, float]:
    backend = SQLiteStorageBackend(db_path=db)
    await backend.initialize()
    prof = cProfile.Profile() if profile else None
    try:
        t = time.perf_counter()
        if prof:
            prof.enable()
        report = await import_legacy(backend, tree, workers=workers)
        if prof:
            prof.disable()
        await backend.close()
        elapsed = time.perf_counter() - t
        backend = SQLiteStorageBackend(db_path=db)
        await backend.initialize()
        t2 = time.perf_counter()
        again = await import_legacy(backend, tree)
        second = time.perf_counter() - t2
        assert again.events_new == 0, again.to_dict()
    finally:
        await backend.close()
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    assert report.ok, report.to_dict()
    return elapsed, report.events_written, second


def baseline(tree: Path, db: Path) -> tuple[float, float, int]:
    """json.loads + executemany of the same records into the same schema, one transaction.

    Returns (seconds reading and parsing, seconds inserting, rows). Ids are a plain counter:
    the cheapest possible, so the baseline is, if anything, flattered. Its ``msg`` is the
    event name and the raw data JSON (the bare way to make a record searchable; the FTS
    index costs in proportion to the words in ``msg``).
    """
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -131072")  # same as the backend's writer
    ddl.migrate(conn)
    ddl.set_fts(conn, True)
    t = time.perf_counter()
    rows = []
    n = 0

    def row(ts: float, run_id: str, etype: str, msg: str, payload: str, span: str | None) -> tuple[object, ...]:
        nonlocal n
        n += 1
        h = f"{n:032x}"
        uid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        return (uid, int(ts * 1e6), run_id, "agent", etype, "info", msg, payload, span, None, None, None, None)

    for run_dir in sorted(tree.iterdir()):
        run_id = run_dir.name
        with open(run_dir / "logs.jsonl", "rb") as fh:
            for line in fh:
                o = json.loads(line)
                data = json.dumps(o["data"])
                rows.append(row(o["timestamp"], run_id, "log", f"{o['event']} {data}", data, o.get("span_id")))
        mcp = run_dir / "mcp_calls.jsonl"
        if mcp.exists():
            with open(mcp, "rb") as fh:
                for line in fh:
                    o = json.loads(line)
                    payload = json.dumps(o)
                    rows.append(row(o["timestamp"], run_id, "mcp.call", f"mcp.call {payload}", payload, None))
        for name, samples in json.loads((run_dir / "metrics.json").read_bytes()).items():
            for s in samples:
                payload = json.dumps({"name": name, "value": s["value"]})
                rows.append(row(s["timestamp"], run_id, "metric", f"metric {name}={s['value']}", payload, None))
    parsed = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(ddl.EVENT_INSERT, rows)
    conn.execute("INSERT INTO events_fts (rowid, msg) SELECT seq, msg FROM events WHERE msg IS NOT NULL")
    conn.execute("COMMIT")
    done = time.perf_counter()
    count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return parsed - t, done - parsed, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path, default=None, help="where to build the tree (default: a temp folder)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of our import")
    ap.add_argument("--workers", type=int, default=None, help="parser processes (default: cores - 1)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="magsag-bench-migrate-", dir=args.workdir))
    try:
        tree = work / ".runs" / "agents"
        t = time.perf_counter()
        total = generate(tree, args.runs, args.lines)
        print(f"generated {args.runs:,} runs, {total:,} records in {time.perf_counter() - t:.1f}s under {tree}")
        os.sync()
        b_parse, b_insert, b_n = baseline(tree, work / "bare.db")
        b_s = b_parse + b_insert
        o_s, o_n, again = asyncio.run(ours(tree, work / "ours.db", args.profile, args.workers))
        print(f"baseline json.loads + executemany: {b_n:,} rows in {b_s:.2f}s = {b_n / b_s:,.0f} rows/s")
        print(f"  of which executemany alone:      {b_insert:.2f}s = {b_n / b_insert:,.0f} rows/s (engine ceiling)")
        print(f"magsag migrate (import_legacy):    {o_n:,} events in {o_s:.2f}s = {o_n / o_s:,.0f} events/s")
        print(f"ratio ours / baseline: {(o_n / o_s) / (b_n / b_s):.2f}x")
        print(f"second import (nothing new): {again:.2f}s")
        save(
            "migrate",
            {
                "runs": args.runs,
                "records": total,
                "baseline_rows": b_n,
                "baseline_rows_per_s": round(b_n / b_s),
                "baseline_executemany_rows_per_s": round(b_n / b_insert),
                "ours_events": o_n,
                "ours_events_per_s": round(o_n / o_s),
                "ratio": round((o_n / o_s) / (b_n / b_s), 3),
                "second_import_s": round(again, 3),
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
