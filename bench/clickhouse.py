"""ClickHouse benchmark: our lake load into chDB against a bare ``INSERT ... SELECT FROM file()``,
then analyst queries on chDB against DuckDB over the lake, side by side.

    python3 bench/clickhouse.py                      # 10M events (lake cached under bench/out/)
    python3 bench/clickhouse.py --events 1000000     # smaller while developing
    python3 bench/clickhouse.py --json

1. **Lake**: ``--events`` demo events over 30 days (``magsag.ingest.demo``: MAG runs
   delegating to SAGs, MCP calls, metrics, errors) and their runs, written with the lake
   writer (sorted zstd Parquet + manifest, as tiering writes them). Built once and reused
   from ``bench/out/clickhouse-lake-<events>/``.
2. **Load** (events) into a fresh chDB folder, in the same run:
   * *bare*: ``INSERT INTO t SELECT * FROM file('<lake>/events/dt=*/*.parquet', Parquet)``
     into a table with the identical DDL (same codecs, skip indexes, sort key);
   * *ours, server-side*: ``load_lake`` — per day: manifest plan, staging table, row
     check, ``REPLACE PARTITION``, row verification, ledger row;
   * *ours, client-side*: the same with pyarrow reading and Arrow batches pushed into chDB.
   Ratio = ours / bare rows per second.
3. **Queries**: per-agent daily cost, error rate by agent, p95 MCP latency per
   server/tool, one run's events, a word search over the last 7 days — chDB over the
   loaded tables vs DuckDB over the Parquet lake (hive partitions). Median of ``--repeat``
   warm runs after one warm-up; the answers of both engines are compared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import save
from magsag.backends.arrow import events_table, runs_table
from magsag.backends.schema import day_of_us
from magsag.lakehouse import manifest
from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.clickhouse.engines import ChdbEngine
from magsag.lakehouse.clickhouse.load import load_lake
from magsag.lakehouse.clickhouse.schema import init_schema
from magsag.lakehouse.lakewriter import SORT_KEYS, PartitionWriter, publish
from magsag.lakehouse.objstore import Lake, open_lake

OUT = Path(__file__).resolve().parent / "out"
END = datetime(2025, 11, 1, tzinfo=UTC)
DAYS = 30
FILE_ROWS = 1_000_000  # a day's buffer is written as a file when it reaches this


# ---------------------------------------------------------------------- lake


def _write(lake: Lake, dataset: str, day: date, rows: list[tuple[Any, ...]], seq: int) -> None:
    table = (events_table if dataset == "events" else runs_table)(rows)
    table = table.sort_by([(c, "ascending") for c in SORT_KEYS[dataset]])
    with PartitionWriter(lake, dataset, day, "bench", seq) as writer:
        writer.write(table)
        staged = writer.finish()
    publish(lake, staged)


def build_lake(n_events: int, seed: int) -> tuple[Lake, dict[str, int]]:
    """The demo lake of about ``n_events`` events (cached: built once per size and seed)."""
    from magsag.ingest.demo import DemoGenerator

    root = OUT / f"clickhouse-lake-{n_events}-s{seed}"
    done = root / "_bench_done.json"
    if done.exists():
        return open_lake(str(root)), json.loads(done.read_text())
    if root.exists():
        shutil.rmtree(root)
    lake = open_lake(str(root))
    sample = list(DemoGenerator(days=1, runs_per_day=100, seed=seed, end=END))
    per_mag = sum(len(b.events) for b in sample) / len(sample)
    runs_per_day = max(1, round(n_events / DAYS / per_mag))
    buffers: dict[tuple[str, date], list[tuple[Any, ...]]] = defaultdict(list)
    seqs: dict[tuple[str, date], int] = defaultdict(int)
    counts = {"events": 0, "runs": 0}
    started = time.perf_counter()

    def flush(key: tuple[str, date]) -> None:
        rows = buffers.pop(key, [])
        if rows:
            _write(lake, key[0], key[1], rows, seqs[key])
            seqs[key] += 1

    for i, batch in enumerate(DemoGenerator(days=DAYS, runs_per_day=runs_per_day, seed=seed, end=END)):
        for dataset, items in (("events", batch.events), ("runs", batch.runs)):
            ts_index = 1 if dataset == "events" else 4
            for item in items:
                row = item.row()
                key = (dataset, day_of_us(row[ts_index]))
                buffers[key].append(row)
                if len(buffers[key]) >= FILE_ROWS:
                    flush(key)
                counts[dataset] += 1
        if i % 2000 == 0 and batch.events:  # days two behind the stream are complete
            today = day_of_us(batch.events[0].ts_us)
            for key in [k for k in buffers if k[1] < today - timedelta(days=1)]:
                flush(key)
            print(f"\r  lake: {counts['events']:,} events", end="", file=sys.stderr, flush=True)
    for key in list(buffers):
        flush(key)
    print(f"\r  lake: {counts['events']:,} events in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    done.write_text(json.dumps(counts))
    return lake, counts


# ---------------------------------------------------------------------- load


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def bench_load(engine_dir: Path, lake: Lake, n_events: int) -> dict[str, Any]:
    engine = ChdbEngine(engine_dir, "bare")
    try:
        for f in lake.fs.glob(lake.path("events/dt=*/*.parquet")):  # same page cache for every side
            Path(f).read_bytes()
        out: dict[str, Any] = {}
        init_schema(engine)
        glob = sql.literal(lake.path("events/dt=*/*.parquet"))
        bare_sql = (
            f"INSERT INTO {sql.table('bare', 'events')} SELECT * FROM file({glob}, Parquet) "
            "SETTINGS use_hive_partitioning = 0"
        )
        secs, _ = timed(lambda: engine.command(bare_sql))
        assert engine.value(f"SELECT count() FROM {sql.table('bare', 'events')}") == n_events
        out["bare"] = {"seconds": secs, "rows_per_s": n_events / secs}
        for mode, client in (("ours_server", False), ("ours_client", True)):
            engine.database = f"load_{mode}"
            secs, report = timed(lambda c=client: load_lake(engine, lake, datasets=("events",), client_side=c))
            assert report.loaded_rows == n_events
            out[mode] = {"seconds": secs, "rows_per_s": n_events / secs, "mode": report.mode}
            out[mode]["ratio"] = out[mode]["rows_per_s"] / out["bare"]["rows_per_s"]
        engine.database = "load_ours_server"
        load_lake(engine, lake, datasets=("runs",))  # runs for the queries
        return out
    finally:
        engine.close()


# -------------------------------------------------------------------- queries


def queries(db: str, lake_root: str, run_id: str, since: date) -> list[tuple[str, str, str]]:
    """(name, chDB SQL, DuckDB SQL): the query benchmark's analyst questions, in each dialect."""
    ev, runs = sql.table(db, "events"), sql.table(db, "runs")
    duck_ev = f"read_parquet('{lake_root}/events/*/*.parquet', hive_partitioning = true)"
    duck_runs = f"read_parquet('{lake_root}/runs/*/*.parquet', hive_partitioning = true)"
    ev_cols = ", ".join(f"epoch_us({c})" if c == "ts" else c for c in sql.column_names("events"))
    return [
        (
            "per-agent daily cost",
            f"SELECT toDate(ts) AS day, agent_slug, round(sum(JSONExtractFloat(payload, 'value')), 4) AS cost "
            f"FROM {ev} WHERE type = 'metric' AND JSONExtractString(payload, 'name') = 'cost_usd' "
            "GROUP BY day, agent_slug ORDER BY day, agent_slug",
            "SELECT dt, agent_slug, round(sum(CAST(payload ->> 'value' AS DOUBLE)), 4) AS cost "
            f"FROM {duck_ev} WHERE type = 'metric' AND (payload ->> 'name') = 'cost_usd' GROUP BY ALL ORDER BY ALL",
        ),
        (
            "error rate by agent",
            f"SELECT agent_slug, count() AS runs, round(avg(status = 'failed'), 6) FROM {runs} FINAL "
            "WHERE status != 'running' GROUP BY agent_slug ORDER BY agent_slug",
            "SELECT agent_slug, count(*) AS runs, round(avg((status = 'failed')::INT), 6) "
            f"FROM {duck_runs} WHERE status <> 'running' GROUP BY 1 ORDER BY 1",
        ),
        (
            "p95 MCP latency",
            "SELECT JSONExtractString(payload, 'server_id') AS server, JSONExtractString(payload, 'tool') AS tool, "
            f"round(quantileExactInclusive(0.95)(JSONExtractFloat(payload, 'latency_ms')), 3) FROM {ev} "
            "WHERE type = 'mcp.call' GROUP BY server, tool ORDER BY server, tool",
            "SELECT payload ->> 'server_id' AS server, payload ->> 'tool' AS tool, "
            "round(quantile_cont(CAST(payload ->> 'latency_ms' AS DOUBLE), 0.95), 3) "
            f"FROM {duck_ev} WHERE type = 'mcp.call' GROUP BY ALL ORDER BY ALL",
        ),
        (
            "one run's events",
            f"SELECT {sql.select_list('events')} FROM {ev} WHERE run_id = '{run_id}' ORDER BY ts, event_id",
            f"SELECT {ev_cols} FROM {duck_ev} WHERE run_id = '{run_id}' ORDER BY ts, event_id",
        ),
        (
            "text search, 7 days",
            f"SELECT event_id, toUnixTimestamp64Micro(ts) AS us, run_id, msg FROM {ev} "
            f"WHERE ts >= toDateTime64('{since.isoformat()}', 6, 'UTC') "
            f"AND hasToken({sql.MSG_TOKENS}, 'timed') AND hasToken({sql.MSG_TOKENS}, 'out') "
            "AND msg ILIKE '%timed out%' ORDER BY us DESC, event_id LIMIT 100",
            f"SELECT event_id, epoch_us(ts) AS us, run_id, msg FROM {duck_ev} WHERE dt >= DATE '{since.isoformat()}' "
            "AND msg ILIKE '%timed out%' ORDER BY us DESC, event_id LIMIT 100",
        ),
    ]


def _median_ms(fn: Any, repeat: int) -> tuple[float, Any]:
    result = fn()  # warm-up (and the answer)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, result


def _norm(rows: list[Any]) -> list[tuple[Any, ...]]:
    out = []
    for r in rows:
        vals = []
        for v in r:
            if isinstance(v, float):
                v = round(v, 3)
            elif isinstance(v, datetime):
                v = v.astimezone(UTC).replace(tzinfo=None)
            elif isinstance(v, date):
                v = v.isoformat()
            vals.append(v)
        out.append(tuple(vals))
    return out


def bench_queries(engine_dir: Path, lake: Lake, repeat: int) -> list[dict[str, Any]]:
    import duckdb

    engine = ChdbEngine(engine_dir, "load_ours_server")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        db = engine.database
        run_id = engine.value(
            f"SELECT run_id FROM {sql.table(db, 'runs')} WHERE agent_slug LIKE '%-sag' ORDER BY started_at "
            f"LIMIT 1 OFFSET (SELECT intDiv(count(), 2) FROM {sql.table(db, 'runs')})"
        )
        last_day = max(manifest.partitions(lake, "events"))
        out = []
        for name, ch_sql, duck_sql in queries(db, lake.root, run_id, last_day - timedelta(days=6)):
            ch_ms, ch_rows = _median_ms(lambda q=ch_sql: engine.rows(q), repeat)
            duck_ms, duck_rows = _median_ms(lambda q=duck_sql: con.execute(q).fetchall(), repeat)
            same = _norm(ch_rows) == _norm(duck_rows)
            out.append(
                {
                    "query": name,
                    "chdb_ms": round(ch_ms, 1),
                    "duckdb_ms": round(duck_ms, 1),
                    "duckdb_over_chdb": round(duck_ms / ch_ms, 2) if ch_ms else None,
                    "rows": len(ch_rows),
                    "same_answer": same,
                }
            )
        return out
    finally:
        con.close()
        engine.close()


# ----------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000, help="events in the lake (default 10,000,000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=5, help="timed runs per query (median reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    OUT.mkdir(parents=True, exist_ok=True)
    lake, counts = build_lake(args.events, args.seed)
    n_events = counts["events"]
    work = Path(tempfile.mkdtemp(prefix="chdb-", dir=OUT))
    try:
        load = bench_load(work, lake, n_events)
        q = bench_queries(work, lake, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"events": n_events, "runs": counts["runs"], "load": load, "queries": q}
    save("clickhouse", result)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"lake: {n_events:,} events, {counts['runs']:,} runs over {DAYS} days ({lake.root})")
    print(f"{'load (events into chDB)':32} {'seconds':>8} {'rows/s':>12} {'vs bare':>8}")
    for key, label in (("bare", "bare INSERT SELECT FROM file()"), ("ours_server", "ours, server-side (file())"),
                       ("ours_client", "ours, client-side (Arrow)")):  # fmt: skip
        r = load[key]
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "1.00"
        print(f"{label:32} {r['seconds']:8.2f} {r['rows_per_s']:12,.0f} {ratio:>8}")
    print()
    print(f"{'query':34} {'chDB ms':>9} {'DuckDB ms':>10} {'DuckDB/chDB':>12} {'rows':>6}  same answer")
    for r in q:
        print(
            f"{r['query']:34} {r['chdb_ms']:9.1f} {r['duckdb_ms']:10.1f} {r['duckdb_over_chdb']:12.2f} "
            f"{r['rows']:6}  {'yes' if r['same_answer'] else 'NO'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
