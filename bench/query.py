"""Query benchmark: the analyst questions through our views vs bare DuckDB over the same files.

    python3 bench/query.py                      # 10M-event lake, local disk
    python3 bench/query.py --events 1000000     # a smaller lake (develop with this)
    python3 bench/query.py --s3                 # the same lake served by SeaweedFS
    python3 bench/query.py --json               # figures as JSON

The lake (``bench/out/query-lake-<events>/``, gitignored) is made once and reused: demo
activity (``magsag.ingest.demo``: MAG runs delegating to SAGs, MCP calls, metrics,
errors) for a tenth of the events, replicated with fresh run and event ids up to the
size asked, written by the tiering job's writer (``magsag.lakehouse.lakewriter``: sorted zstd
Parquet, 122,880-row row groups, manifest entries), 30 UTC days. The hot store beside
it is an empty SQLite store, so both sides read exactly the same rows.

For each question, the same SQL runs against

* **ours**: the views of ``magsag.lakehouse.connect()`` (``events``/``runs``: hot + lake union,
  dedup boundary, ``tier`` column; the lake read through the manifest's file list), and
* **bare**: ``read_parquet('<lake>/events/*/*.parquet', hive_partitioning = true)`` on a
  plain DuckDB connection,

alternating sides, ``--repeat`` times each (more for fast queries: as many rounds as fit
in about a second per side, at most 40) after one untimed warm-up of every side; printed
are the median and the best time of each side and the ratios ours / bare (target: within
1.2x). On a shared machine the best times are the steadier comparison; both are reported.

Cold: one run's events by ``run_id``, each measurement in a fresh Python process
(``--probe``): import + connect + query, for our views, for the documented API
(``get_storage_backend().get_events``) and for bare DuckDB (target: under 200 ms on
local disk).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import save  # noqa: E402

OUT = ROOT / "bench" / "out"
DAYS = 30
END = datetime(2026, 6, 1, tzinfo=UTC)  # fixed: the cached lake never depends on today

ROUND_BUDGET_S = 1.0  # per side and question: fast queries repeat until about this much time
MAX_ROUNDS = 40

QUERIES: dict[str, str] = {
    "per-agent daily cost": (
        "SELECT dt, agent_slug, sum(CAST(payload ->> 'value' AS DOUBLE)) AS cost_usd "
        "FROM {events} WHERE type = 'metric' AND (payload ->> 'name') = 'cost_usd' GROUP BY ALL ORDER BY ALL"
    ),
    "error rate by agent": (
        "SELECT agent_slug, count(*) AS runs, avg((status = 'failed')::INT) AS error_rate "
        "FROM {runs} WHERE status <> 'running' GROUP BY 1 ORDER BY 1"
    ),
    "p95 MCP latency": (
        "SELECT payload ->> 'server_id' AS server, payload ->> 'tool' AS tool, "
        "quantile_cont(CAST(payload ->> 'latency_ms' AS DOUBLE), 0.95) AS p95 "
        "FROM {events} WHERE type = 'mcp.call' GROUP BY ALL ORDER BY ALL"
    ),
    "one run's events": "SELECT * EXCLUDE (dt) FROM {events} WHERE run_id = '{run_id}' ORDER BY ts, event_id",
    "text search, 7 days": (
        "SELECT event_id, ts, run_id, msg FROM {events} WHERE dt >= DATE '{week_ago}' "
        "AND msg ILIKE '%timed out%' ORDER BY ts DESC LIMIT 100"
    ),
}


# ------------------------------------------------------------------ the lake


def _demo_tables(events: int) -> tuple[Any, Any]:
    """Demo events and runs (Arrow) for about ``events`` events over DAYS days."""
    import pyarrow as pa
    from magsag.backends.arrow import events_table, runs_table

    from magsag.ingest.demo import DemoGenerator

    per_run = 33  # events per MAG run (with its SAGs), measured on the demo
    gen = DemoGenerator(days=DAYS, runs_per_day=max(1, events // per_run // DAYS), seed=11, end=END)
    ev_parts, run_parts, ev_rows, run_rows = [], [], [], []
    for batch in gen:
        ev_rows.extend(e.row() for e in batch.events)
        run_rows.extend(r.row() for r in batch.runs)
        if len(ev_rows) >= 200_000:
            ev_parts.append(events_table(ev_rows))
            run_parts.append(runs_table(run_rows))
            ev_rows, run_rows = [], []
    ev_parts.append(events_table(ev_rows))
    run_parts.append(runs_table(run_rows))
    return pa.concat_tables(ev_parts), pa.concat_tables(run_parts)


def build_lake(target: Path, events: int) -> dict[str, Any]:
    """Write the benchmark lake (once): a tenth demo, replicated with new ids, per day and dataset."""
    import duckdb
    from magsag.backends.sqlite.store import SQLiteStorageBackend
    from magsag.lakehouse import lakewriter
    from magsag.lakehouse.objstore import open_lake

    started = time.perf_counter()
    copies = 10 if events >= 100_000 else 1
    print(f"building a {events:,}-event lake in {target} (demo of {events // copies:,} x {copies}) ...", flush=True)
    ev, runs = _demo_tables(events // copies)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    con.register("base_events", ev)
    con.register("base_runs", runs)
    # Copy i: run ids get a suffix, event ids a different node byte (still unique UUIDv7s).
    con.execute(
        "CREATE TABLE ev AS SELECT * EXCLUDE (c) REPLACE ("
        "  CASE WHEN c = 0 THEN event_id ELSE substr(event_id, 1, 24) || lpad(to_hex(c), 2, '0') "
        "  || substr(event_id, 27) END AS event_id,"
        "  CASE WHEN c = 0 THEN run_id ELSE run_id || '-' || c END AS run_id) "
        f"FROM base_events, range({copies}) t(c)"
    )
    con.execute(
        "CREATE TABLE rn AS SELECT * EXCLUDE (c) REPLACE ("
        "  CASE WHEN c = 0 THEN run_id ELSE run_id || '-' || c END AS run_id,"
        "  CASE WHEN c = 0 OR parent_run_id IS NULL THEN parent_run_id ELSE parent_run_id || '-' || c END "
        "  AS parent_run_id) "
        f"FROM base_runs, range({copies}) t(c)"
    )
    lake_dir = target / "lake"
    lake = open_lake(str(lake_dir))
    days = [r[0] for r in con.execute("SELECT DISTINCT CAST(ts AS DATE) FROM ev ORDER BY 1").fetchall()]
    for day in days:
        for dataset, table, col in (("events", "ev", "ts"), ("runs", "rn", "started_at")):
            keys = ", ".join(lakewriter.SORT_KEYS[dataset])
            data = con.execute(
                f"SELECT * FROM {table} WHERE CAST({col} AS DATE) = DATE '{day}' ORDER BY {keys}"
            ).to_arrow_table()
            if data.num_rows == 0:
                continue
            with lakewriter.PartitionWriter(lake, dataset, day, "bench") as w:
                for batch in data.to_batches(max_chunksize=lakewriter.ROW_GROUP_ROWS):
                    w.write(batch)
                staged = w.finish()
            lakewriter.publish(lake, staged)
    mid = days[len(days) // 2]
    run_id = con.execute(
        f"SELECT run_id FROM ev WHERE CAST(ts AS DATE) = DATE '{mid}' GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    ).fetchone()[0]
    meta = {
        "events": con.execute("SELECT count(*) FROM ev").fetchone()[0],
        "runs": con.execute("SELECT count(*) FROM rn").fetchone()[0],
        "days": len(days),
        "first_day": days[0].isoformat(),
        "last_day": days[-1].isoformat(),
        "run_id": run_id,
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    import asyncio

    async def empty_hot() -> None:
        hot = SQLiteStorageBackend(target / "hot.db")
        await hot.initialize()
        await hot.close()

    asyncio.run(empty_hot())
    (target / "meta.json").write_text(json.dumps(meta, indent=2))
    print(f"built in {meta['build_seconds']} s: {meta['events']:,} events, {meta['runs']:,} runs", flush=True)
    return meta


def lake_for(events: int, rebuild: bool) -> tuple[Path, dict[str, Any]]:
    target = OUT / f"query-lake-{events}"
    meta_path = target / "meta.json"
    if rebuild and target.exists():
        import shutil

        shutil.rmtree(target)
    if not meta_path.exists():
        target.mkdir(parents=True, exist_ok=True)
        return target, build_lake(target, events)
    return target, json.loads(meta_path.read_text())


# ------------------------------------------------------------------ timing


def _bare_connection(lake_url: str, s3: dict[str, str] | None) -> Any:
    from magsag.backends.duckdb_ext import new_connection

    con = new_connection(extensions=("httpfs",) if s3 else ())
    if s3:
        con.execute(
            f"CREATE SECRET (TYPE s3, KEY_ID '{s3['key']}', SECRET '{s3['secret']}', REGION 'us-east-1', "
            f"ENDPOINT '{s3['endpoint'].split('://', 1)[1]}', URL_STYLE 'path', USE_SSL false)"
        )
    return con


def _bare_sources(lake_url: str) -> dict[str, str]:
    root = lake_url.rstrip("/")
    return {ds: f"read_parquet('{root}/{ds}/*/*.parquet', hive_partitioning = true)" for ds in ("events", "runs")}


def _run(con: Any, sql: str) -> tuple[float, int]:
    t = time.perf_counter()
    n = con.execute(sql).to_arrow_table().num_rows
    return time.perf_counter() - t, n


def measure(settings: Any, lake_url: str, meta: dict[str, Any], repeat: int, s3: dict[str, str] | None) -> list[dict]:
    from magsag.lakehouse import query

    ours = query.connect(settings)
    bare = _bare_connection(lake_url, s3)
    src = _bare_sources(lake_url)
    week_ago = (date.fromisoformat(meta["last_day"]) - timedelta(days=6)).isoformat()
    fmt = {"run_id": meta["run_id"], "week_ago": week_ago}
    out = []
    for name, template in QUERIES.items():
        sides = {
            "ours": (ours, template.format(events="events", runs="runs", **fmt)),
            "lake view": (ours, template.format(events="lake_events", runs="lake_runs", **fmt)),
            "bare": (bare, template.format(events=src["events"], runs=src["runs"], **fmt)),
        }
        times: dict[str, list[float]] = {k: [] for k in sides}
        rows: dict[str, int] = {}
        warm = []
        for con, sql in sides.values():
            _run(con, sql)  # warm-up: file metadata, caches (every side once, untimed)
            warm.append(_run(con, sql)[0])
        # Fast questions get more rounds: a few ms of scheduler noise on a shared machine
        # would otherwise decide the ratio of a 20 ms query. The fastest side's warm time
        # estimates the cost (the slower ones are the more likely to have been disturbed).
        rounds = max(repeat, min(MAX_ROUNDS, int(ROUND_BUDGET_S / max(min(warm), 1e-3))))
        for _ in range(rounds):
            for side, (con, sql) in sides.items():
                dt, rows[side] = _run(con, sql)
                times[side].append(dt)
        assert len(set(rows.values())) == 1, (name, rows)
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        out.append(
            {
                "query": name,
                "rows": rows["ours"],
                "rounds": rounds,
                "ours_ms": round(med["ours"] * 1000, 1),
                "lake_view_ms": round(med["lake view"] * 1000, 1),
                "bare_ms": round(med["bare"] * 1000, 1),
                "ratio": round(med["ours"] / med["bare"], 2),
                "best_ours_ms": round(best["ours"] * 1000, 1),
                "best_bare_ms": round(best["bare"] * 1000, 1),
                "best_ratio": round(best["ours"] / best["bare"], 2),
            }
        )
        r = out[-1]
        print(
            f"  {name:22s} median: ours {r['ours_ms']:7.1f} ms  lake_events {r['lake_view_ms']:7.1f} ms  "
            f"bare {r['bare_ms']:7.1f} ms  ratio {r['ratio']:.2f}   |  best: ours {r['best_ours_ms']:7.1f} "
            f"bare {r['best_bare_ms']:7.1f} ratio {r['best_ratio']:.2f}",
            flush=True,
        )
    query.close(ours)
    bare.close()
    return out


# ------------------------------------------------------------------ cold probes


def probe(kind: str, run_id: str, lake_url: str) -> dict[str, float]:
    """One cold measurement in this (fresh) process; printed as JSON by ``--probe``."""
    t0 = time.perf_counter()
    if kind == "views":
        from magsag.lakehouse import query

        t1 = time.perf_counter()
        con = query.connect()
        t2 = time.perf_counter()
        n = con.execute(f"SELECT * FROM events WHERE run_id = '{run_id}' ORDER BY ts").to_arrow_table().num_rows
    elif kind == "api":
        import asyncio

        from magsag.storage import get_storage_backend

        t1 = time.perf_counter()

        async def go() -> tuple[float, int]:
            storage = await get_storage_backend()
            t = time.perf_counter()
            rows = [e async for e in storage.get_events(run_id)]
            await storage.close()
            return t, len(rows)

        t2, n = asyncio.run(go())
    else:
        from magsag.backends import duckdb_ext

        t1 = time.perf_counter()
        s3 = json.loads(os.environ["BENCH_S3"]) if os.environ.get("BENCH_S3") else None
        con = _bare_connection(lake_url, s3)
        t2 = time.perf_counter()
        src = _bare_sources(lake_url)["events"]
        n = con.execute(f"SELECT * FROM {src} WHERE run_id = '{run_id}' ORDER BY ts").to_arrow_table().num_rows
        del duckdb_ext
    t3 = time.perf_counter()
    return {
        "import_ms": (t1 - t0) * 1000,
        "connect_ms": (t2 - t1) * 1000,
        "query_ms": (t3 - t2) * 1000,
        "in_process_ms": (t3 - t1) * 1000,
        "rows": n,
    }


def cold(env: dict[str, str], meta: dict[str, Any], lake_url: str, times: int) -> dict[str, dict[str, float]]:
    out = {}
    for kind in ("views", "api", "bare"):
        samples = []
        for _ in range(times):
            t = time.perf_counter()
            res = subprocess.run(
                [sys.executable, __file__, "--probe", kind, "--run-id", meta["run_id"], "--lake-url", lake_url],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            wall = (time.perf_counter() - t) * 1000
            if res.returncode != 0:
                raise SystemExit(f"probe {kind} failed: {res.stderr.strip().splitlines()[-1:]}")
            sample = json.loads(res.stdout.strip().splitlines()[-1])
            sample["process_ms"] = wall
            samples.append(sample)
        med = {k: round(statistics.median(s[k] for s in samples), 1) for k in samples[0] if k != "rows"}
        med["rows"] = samples[0]["rows"]
        out[kind] = med
        print(
            f"  cold {kind:5s}: connect+query {med['in_process_ms']:7.1f} ms (connect {med['connect_ms']:.1f}, "
            f"query {med['query_ms']:.1f}); imports {med['import_ms']:.0f} ms; "
            f"whole process {med['process_ms']:.0f} ms",
            flush=True,
        )
    return out


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="lake size (default 10M)")
    ap.add_argument(
        "--repeat", type=int, default=5, help="timed runs per query and side (at least; fast queries get more)"
    )
    ap.add_argument("--cold", type=int, default=5, help="fresh processes per cold measurement")
    ap.add_argument("--s3", action="store_true", help="also serve the lake from SeaweedFS and measure there")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached lake")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    ap.add_argument("--probe", choices=("views", "api", "bare"), help=argparse.SUPPRESS)
    ap.add_argument("--run-id", help=argparse.SUPPRESS)
    ap.add_argument("--lake-url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.run_id, args.lake_url)))
        return

    from magsag.lakehouse.settings import load_settings

    target, meta = lake_for(args.events, args.rebuild)
    results: dict[str, Any] = {"events": meta["events"], "runs": meta["runs"], "days": meta["days"]}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MAGSAG_STORAGE_")}
    base_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base_env.get("PYTHONPATH")) if p)
    env = {
        **base_env,
        "MAGSAG_STORAGE_DB_PATH": str(target / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(target / "lake"),
    }
    print(f"local disk: {meta['events']:,} events, {meta['runs']:,} runs, {meta['days']} days", flush=True)
    settings = load_settings(db_path=target / "hot.db", lake_url=str(target / "lake"))
    results["local"] = {
        "queries": measure(settings, str(target / "lake"), meta, args.repeat, None),
        "cold": cold(env, meta, str(target / "lake"), args.cold),
    }
    if args.s3:
        results["s3"] = run_s3(target, meta, args, base_env)
    save("query-s3" if args.s3 else "query", results)
    if args.json:
        print(json.dumps(results, indent=2))


def run_s3(target: Path, meta: dict[str, Any], args: Any, base_env: dict[str, str]) -> dict[str, Any]:
    import tempfile

    from magsag.lakehouse.settings import load_settings

    from tests.lake_fixtures import S3Server

    server = S3Server(Path(tempfile.mkdtemp(prefix="magsag-bench-weed-"))).start()
    try:
        prefix = f"bench-{meta['events']}"
        fs = server.fs()
        t = time.perf_counter()
        fs.put(str(target / "lake") + "/", f"{server.bucket}/{prefix}/", recursive=True)
        print(f"S3 (SeaweedFS {server.endpoint}): uploaded in {time.perf_counter() - t:.0f} s", flush=True)
        url = f"s3://{server.bucket}/{prefix}"
        s3env = server.env(url)
        env = {**base_env, **s3env, "MAGSAG_STORAGE_DB_PATH": str(target / "hot.db")}
        env["BENCH_S3"] = json.dumps({"key": server.key, "secret": server.secret, "endpoint": server.endpoint})
        kw = {k.removeprefix("MAGSAG_STORAGE_").lower(): v for k, v in s3env.items()}
        settings = load_settings(db_path=target / "hot.db", **kw)
        s3 = {"key": server.key, "secret": server.secret, "endpoint": server.endpoint}
        return {
            "queries": measure(settings, url, meta, args.repeat, s3),
            "cold": cold(env, meta, url, args.cold),
        }
    finally:
        server.stop()


if __name__ == "__main__":
    main()
