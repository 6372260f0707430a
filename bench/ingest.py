"""Ingest benchmark: our ``append_events`` against the bare engine doing the same work.

    python3 bench/ingest.py --backend sqlite   [--events 1000000] [--json]
    python3 bench/ingest.py --backend postgres [--events 1000000] [--dsn URL] [--json]

Both modes generate realistic agent activity first (``magsag.ingest.demo``: MAG runs
delegating to SAGs, MCP calls, metrics, errors, artifacts), outside the timings.

* **sqlite**: batches through ``SQLiteStorageBackend.append_events`` vs bare
  ``sqlite3.executemany`` into a file with the identical schema (created by the same
  migration: same indexes, same FTS5 table kept in sync by one ``INSERT ... SELECT``
  per batch, unknown runs created the same way, WAL, ``synchronous=NORMAL``). Then
  one-at-a-time ``append_event`` from one task and from 16 concurrent tasks.
* ``--embed`` (sqlite): the same batches once more into a fresh store while ``magsag data embed
  --every 1s`` runs beside it as its own process (how it is deployed: appends never wait for
  it; the load starts once the job has made its first pass, as a long-running job has);
  reports that ingest rate against the plain one (``embed_ratio``, target >= 0.8), the
  embedder's backlog when the load ends and how long it takes to catch up.
* **postgres**: batches through ``PostgresStorageBackend.append_events`` vs bare asyncpg
  ``copy_records_to_table`` into an identical table (same migration DDL: day partitions,
  the same indexes, generated tsvector; partitions made beforehand, rows pre-built, the
  same integer-timestamp codec). Then ``search_text`` and ``list_runs`` latencies at
  that volume, each beside the identical SQL sent with bare asyncpg: search right after
  the load, and again after ``VACUUM (ANALYZE)`` (what autovacuum does in steady state:
  it merges the GIN pending lists every search otherwise scans).

The two sides alternate batch by batch so both meet the same checkpoints and cache
state; each side's time is the sum of its batches. Ratio = ours / bare events per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import save
from magsag.backends.schema import EVENT_COLUMNS, Event, utc_now

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


# ------------------------------------------------------------------- events


def demo_events(n: int, seed: int = 7) -> list[Event]:
    """``n`` realistic events spread over the last 30 days (the demo generator).

    The run rate is sized from a sample so one pass covers the whole window; a second
    pass with another seed tops up any shortfall (and only its tail is cut).
    """
    from magsag.ingest.demo import DemoGenerator

    end = utc_now().replace(second=0, microsecond=0)
    sample = list(DemoGenerator(days=1, runs_per_day=200, seed=seed, end=end))
    per_run = sum(len(b.events) for b in sample) / len(sample)
    out: list[Event] = []
    while len(out) < n:
        want = n - len(out)
        per_day = max(1, int(want / (30 * per_run) * 0.97))
        more = [e for batch in DemoGenerator(days=30, runs_per_day=per_day, seed=seed, end=end) for e in batch.events]
        out.extend(more[:want])
        seed += 1000
    out.sort(key=lambda e: e.ts_us)  # a live stream: agents log concurrently, in time order
    return out


def batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# ------------------------------------------------------------------- sqlite


def bare_sqlite(path: Path) -> sqlite3.Connection:
    from magsag.backends.sqlite import schema as ddl

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -131072")  # same as the backend's writer
    conn.execute("PRAGMA temp_store = MEMORY")
    ddl.migrate(conn)
    ddl.set_fts(conn, True)
    return conn


def bare_sqlite_batch(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """What a hand-written loader does: rows, unknown runs, FTS rows, one transaction."""
    from magsag.backends.sqlite import schema as ddl

    conn.execute("BEGIN IMMEDIATE")
    lo = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    conn.executemany(ddl.EVENT_INSERT, rows)
    conn.execute(
        "INSERT OR IGNORE INTO runs (run_id, agent_slug, status, started_at) "
        "SELECT run_id, agent_slug, 'running', min(ts) FROM events NOT INDEXED WHERE seq > ? GROUP BY run_id",
        (lo[0] if lo else 0,),
    )
    conn.execute(
        "INSERT INTO events_fts (rowid, msg) SELECT seq, msg FROM events WHERE seq > ? AND msg IS NOT NULL",
        (lo[0] if lo else 0,),
    )
    conn.execute("COMMIT")


async def bench_sqlite(events: list[Event], batch: int, singles: int) -> dict[str, Any]:
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    tmp = Path(tempfile.mkdtemp(prefix="magsag-bench-"))
    try:
        ours = SQLiteStorageBackend(db_path=tmp / "ours.db")
        await ours.initialize()
        bare = bare_sqlite(tmp / "bare.db")
        t_ours = t_bare = 0.0
        for i, chunk in enumerate(batches(events, batch)):
            rows = [e.row() for e in chunk]
            order = ("ours", "bare") if i % 2 else ("bare", "ours")  # alternate who goes first
            for side in order:
                t = time.perf_counter()
                if side == "bare":
                    bare_sqlite_batch(bare, rows)
                    t_bare += time.perf_counter() - t
                else:
                    await ours.append_events(chunk)
                    t_ours += time.perf_counter() - t
        counts = (
            bare.execute("SELECT count(*) FROM events").fetchone()[0],
            (await ours.stats())["events"],
        )
        bare.close()
        await ours.close()
        assert counts == (len(events), len(events)), counts

        bare_single = bare_sqlite_singles(tmp / "bare-single.db", singles)
        single = SQLiteStorageBackend(db_path=tmp / "single.db")
        await single.initialize()
        single_eps = await time_single_appends(single, singles)
        await single.close()
        # MAGSAG_STORAGE_SQLITE_ACK=commit (with Litestream): each call waits for its commit
        committed = SQLiteStorageBackend(db_path=tmp / "single-commit.db", ack="commit")
        await committed.initialize()
        commit_eps = await time_single_appends(committed, singles)
        await committed.close()
        single_eps.update({f"ack_commit_{k}": v for k, v in commit_eps.items()})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(events)
    return {
        "backend": "sqlite",
        "events": n,
        "batch": batch,
        "ours_eps": n / t_ours,
        "bare_eps": n / t_bare,
        "ratio": t_bare / t_ours,
        **single_eps,
        "single_bare_commit_per_event_eps": bare_single,
        "single_appends": singles,
    }


async def time_single_appends(backend: Any, n: int) -> dict[str, float]:
    """Events/s of one-at-a-time ``append_event``: one task, then 16 tasks at once.

    Each figure is timed twice: until the last call returned (each call returns once its
    event is durable), and until a read sees the last event (everything committed).
    """
    base = utc_now() - timedelta(minutes=30)
    out: dict[str, float] = {}

    t = time.perf_counter()
    for i in range(n):
        await backend.append_event("run-single", "planner", "log", base + timedelta(microseconds=i), message=f"s{i}")
    returned = time.perf_counter() - t
    await backend.get_run("run-single")
    out["single_append_1_task_eps"] = n / returned
    out["single_append_1_task_committed_eps"] = n / (time.perf_counter() - t)

    per_task = max(1, n // 16)

    async def task(k: int) -> None:
        for i in range(per_task):
            ts = base + timedelta(seconds=1, microseconds=i)
            await backend.append_event(f"run-c{k}", f"sag-{k}", "log", ts, message=f"t{k} {i}")

    t = time.perf_counter()
    await asyncio.gather(*(task(k) for k in range(16)))
    returned = time.perf_counter() - t
    await backend.get_run("run-c15")
    out["single_append_16_tasks_eps"] = 16 * per_task / returned
    out["single_append_16_tasks_committed_eps"] = 16 * per_task / (time.perf_counter() - t)
    return out


def bare_sqlite_singles(path: Path, n: int) -> float:
    """Events/s of the plain way to make each event durable: one transaction per event
    (the row, its run if new, its FTS row; WAL, ``synchronous=NORMAL``) on the caller's
    thread, rows built beforehand."""
    from magsag.backends.sqlite import schema as ddl

    base = utc_now() - timedelta(minutes=30)
    rows = [
        Event.create("run-single", "planner", "log", base + timedelta(microseconds=i), message=f"s{i}").row()
        for i in range(n)
    ]
    conn = bare_sqlite(path)
    t = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(ddl.EVENT_INSERT, row)
        if cur.rowcount:
            conn.execute(
                "INSERT OR IGNORE INTO runs (run_id, agent_slug, status, started_at) VALUES (?, ?, 'running', ?)",
                (row[2], row[3], row[1]),
            )
            conn.execute("INSERT INTO events_fts (rowid, msg) VALUES (?, ?)", (cur.lastrowid, row[6]))
        conn.execute("COMMIT")
    eps = n / (time.perf_counter() - t)
    conn.close()
    return eps


# ----------------------------------------------------------------- postgres

SEARCHES = (
    "timeout",
    "rate limit exceeded",
    "RateLimitError 429",
    "github get_pull_request",
    "connection reset by peer",
    "502 Bad Gateway",
    "delegation_failure",
    "artifact report.md",
    "pg.query ok",
    "all_delegations_failed",
    "contract violation summary",
    "retry attempt",
)


async def bench_postgres(events: list[Event], batch: int, dsn: str, singles: int, keep: bool) -> dict[str, Any]:
    import asyncpg
    from magsag.backends.postgres import partitions as parts
    from magsag.backends.postgres import schema as ddl
    from magsag.backends.postgres.conn import init_connection
    from magsag.backends.postgres.store import PostgresStorageBackend, websearch_words

    tag = secrets.token_hex(3)
    ours_schema, bare_schema = f"bench_ours_{tag}", f"bench_bare_{tag}"
    ours = PostgresStorageBackend(dsn, schema=ours_schema)
    await ours.initialize()
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        await ddl.migrate(conn, bare_schema, timescale=False)
        days = {e.ts_us // 86_400_000_000 for e in events}
        await parts.create_partitions(conn, bare_schema, days, lock_timeout_ms=10_000)

        t_ours = t_bare = 0.0
        for i, chunk in enumerate(batches(events, batch)):
            rows = [e.row() for e in chunk]

            async def run_bare(rows: list[tuple[Any, ...]] = rows) -> float:
                t = time.perf_counter()
                await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS, schema_name=bare_schema)
                return time.perf_counter() - t

            async def run_ours(chunk: list[Event] = chunk) -> float:
                t = time.perf_counter()
                await ours.append_events(chunk)
                return time.perf_counter() - t

            if i % 2:  # alternate who goes first, so neither always meets the other's leftovers
                t_ours += await run_ours()
                t_bare += await run_bare()
            else:
                t_bare += await run_bare()
                t_ours += await run_ours()
        n = len(events)
        counts = (
            await conn.fetchval(f"SELECT count(*) FROM {bare_schema}.events"),
            await conn.fetchval(f"SELECT count(*) FROM {ours_schema}.events"),
        )
        assert counts == (n, n), counts
        for schema in (ours_schema, bare_schema):
            await conn.execute(f"ANALYZE {schema}.events")
            await conn.execute(f"ANALYZE {schema}.runs")
        # Right after a bulk load the GIN indexes still hold their pending lists, which every
        # search scans; autovacuum merges them in steady state. Measure both.
        fresh = await _search_latency(ours, conn, ours_schema, websearch_words, repeat=2)
        for schema in (ours_schema, bare_schema):
            await conn.execute(f"VACUUM (ANALYZE) {schema}.events", timeout=3600)
        search = await _search_latency(ours, conn, ours_schema, websearch_words)
        search["search_fresh_p50_ms"] = fresh["search_p50_ms"]
        search["search_fresh_p95_ms"] = fresh["search_p95_ms"]
        runs = await _list_runs_latency(ours, conn, ours_schema)
        single_eps = await time_single_appends(ours, singles)
        stats = await ours.stats()
        # MAGSAG_STORAGE_PG_ACK=journal: acknowledged from a local crash journal (backends/postgres/journal.py)
        jdir = Path(tempfile.mkdtemp(prefix="magsag-pgj-"))
        journaled = PostgresStorageBackend(dsn, schema=ours_schema, ack="journal", journal_dir=jdir)
        await journaled.initialize()
        try:
            j_eps = await time_single_appends(journaled, singles)
        finally:
            await journaled.close()
            shutil.rmtree(jdir, ignore_errors=True)
        single_eps.update({f"ack_journal_{k}": v for k, v in j_eps.items()})
    finally:
        await ours.close()
        if not keep:
            await conn.execute(f"DROP SCHEMA IF EXISTS {ours_schema} CASCADE")
            await conn.execute(f"DROP SCHEMA IF EXISTS {bare_schema} CASCADE")
        await conn.close()
    return {
        "backend": "postgres",
        "events": n,
        "batch": batch,
        "ours_eps": n / t_ours,
        "bare_eps": n / t_bare,
        "ratio": t_bare / t_ours,
        "partitions": stats["partitions"],
        "bytes": stats["bytes"],
        **search,
        **runs,
        **single_eps,
        "single_appends": singles,
    }


async def _timed(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def _search_latency(ours: Any, conn: Any, schema: str, websearch_words: Any, repeat: int = 5) -> dict[str, Any]:
    since = utc_now() - timedelta(days=3)
    cols = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
    sql = (
        "WITH q AS MATERIALIZED (SELECT websearch_to_tsquery('simple', $1) AS q) "
        f"SELECT {cols}, ts_rank(e.msg_tsv, q.q, 1) AS score FROM q, {schema}.events e "
        "WHERE e.msg_tsv @@ q.q ORDER BY score DESC, e.ts DESC LIMIT 100"
    )
    for text in SEARCHES[:3]:  # warm the cache for both sides
        await ours.search_text(text)
    ours_ms: list[float] = []
    bare_ms: list[float] = []
    since_ms: list[float] = []
    agent_ms: list[float] = []
    hits = []
    for text in SEARCHES:
        ours_ms += await _timed(lambda t=text: ours.search_text(t), repeat)
        bare_ms += await _timed(lambda t=text: conn.fetch(sql, websearch_words(t)), repeat)
        since_ms += await _timed(lambda t=text: ours.search_text(t, since=since), repeat)
        agent_ms += await _timed(lambda t=text: ours.search_text(t, agent_slug="web-research-sag"), repeat)
        hits.append(
            await conn.fetchval(
                f"SELECT count(*) FROM {schema}.events WHERE msg_tsv @@ websearch_to_tsquery('simple', $1)",
                websearch_words(text),
            )
        )
    return {
        "search_p50_ms": pct(ours_ms, 0.5),
        "search_p95_ms": pct(ours_ms, 0.95),
        "search_bare_p50_ms": pct(bare_ms, 0.5),
        "search_bare_p95_ms": pct(bare_ms, 0.95),
        "search_since_3d_p50_ms": pct(since_ms, 0.5),
        "search_since_3d_p95_ms": pct(since_ms, 0.95),
        "search_agent_p50_ms": pct(agent_ms, 0.5),
        "search_agent_p95_ms": pct(agent_ms, 0.95),
        "search_queries": len(SEARCHES),
        "search_median_matches": statistics.median(hits),
        "search_max_matches": max(hits),
    }


async def _list_runs_latency(ours: Any, conn: Any, schema: str) -> dict[str, Any]:
    since = utc_now() - timedelta(days=7)
    cases = [
        {},
        {"agent_slug": "research-mag"},
        {"status": "failed"},
        {"agent_slug": "web-research-sag", "status": "succeeded", "since": since},
        {"since": since, "until": utc_now() - timedelta(days=1), "limit": 50, "offset": 50},
    ]
    sql = (
        f"SELECT run_id, agent_slug, parent_run_id, status, started_at, ended_at, metrics, tags FROM {schema}.runs "
        "WHERE agent_slug = $1 AND status = $2 AND started_at >= $3 ORDER BY started_at DESC, run_id DESC LIMIT 100"
    )
    since_us = int(since.timestamp() * 1_000_000)
    ours_ms: list[float] = []
    for kwargs in cases:
        ours_ms += await _timed(lambda k=kwargs: ours.list_runs(**k), 10)
    bare_ms = await _timed(lambda: conn.fetch(sql, "web-research-sag", "succeeded", since_us), 10)
    same_ms = await _timed(lambda: ours.list_runs(agent_slug="web-research-sag", status="succeeded", since=since), 10)
    return {
        "list_runs_p50_ms": pct(ours_ms, 0.5),
        "list_runs_p95_ms": pct(ours_ms, 0.95),
        "list_runs_filtered_p50_ms": pct(same_ms, 0.5),
        "list_runs_filtered_bare_p50_ms": pct(bare_ms, 0.5),
        "runs": await conn.fetchval(f"SELECT count(*) FROM {schema}.runs"),
    }


# ------------------------------------------------------------------- output


def show(result: dict[str, Any], command: str) -> None:
    r = result
    print(f"$ {command}")
    print(f"{r['backend']}: {r['events']:,} demo events in batches of {r['batch']:,}")
    bare_name = "sqlite3.executemany" if r["backend"] == "sqlite" else "asyncpg copy_records_to_table"
    lines = [
        ("append_events (ours)", f"{r['ours_eps']:>12,.0f} events/s"),
        (f"bare {bare_name}", f"{r['bare_eps']:>12,.0f} events/s"),
        ("ratio ours/bare", f"{r['ratio']:>12.2f}x   (target >= 0.80x)"),
        (
            "append_event, 1 task",
            f"{r['single_append_1_task_eps']:>12,.0f} events/s   "
            f"({r['single_append_1_task_committed_eps']:,.0f} until all committed)",
        ),
        (
            "append_event, 16 tasks",
            f"{r['single_append_16_tasks_eps']:>12,.0f} events/s   "
            f"({r['single_append_16_tasks_committed_eps']:,.0f} until all committed)",
        ),
    ]
    if "ack_journal_single_append_1_task_eps" in r:
        lines += [
            (
                "append_event, 1 task, ack=journal",
                f"{r['ack_journal_single_append_1_task_eps']:>12,.0f} events/s   "
                f"({r['ack_journal_single_append_1_task_committed_eps']:,.0f} until all committed)",
            ),
            ("append_event, 16 tasks, ack=journal", f"{r['ack_journal_single_append_16_tasks_eps']:>12,.0f} events/s"),
        ]
    if "ack_commit_single_append_1_task_eps" in r:
        lines += [
            ("append_event, 1 task, ack=commit", f"{r['ack_commit_single_append_1_task_eps']:>12,.0f} events/s"),
            ("append_event, 16 tasks, ack=commit", f"{r['ack_commit_single_append_16_tasks_eps']:>12,.0f} events/s"),
        ]
    if "single_bare_commit_per_event_eps" in r:
        bare_single = r["single_bare_commit_per_event_eps"]
        lines += [
            ("bare: one commit per event", f"{bare_single:>12,.0f} events/s"),
            (
                "ratio 1 task / 16 tasks to it",
                f"{r['single_append_1_task_eps'] / bare_single:>12.2f}x / "
                f"{r['single_append_16_tasks_eps'] / bare_single:.2f}x",
            ),
        ]
    if r["backend"] == "postgres":
        lines += [
            (
                f"search_text p50 / p95 ({r['search_queries']} queries)",
                f"{r['search_p50_ms']:>9.1f} / {r['search_p95_ms']:.1f} ms   "
                f"(matches: median {r['search_median_matches']:,.0f}, max {r['search_max_matches']:,})",
            ),
            ("  same SQL, bare asyncpg", f"{r['search_bare_p50_ms']:>9.1f} / {r['search_bare_p95_ms']:.1f} ms"),
            (
                "  before VACUUM (GIN pending lists)",
                f"{r['search_fresh_p50_ms']:>9.1f} / {r['search_fresh_p95_ms']:.1f} ms",
            ),
            ("  since = last 3 days", f"{r['search_since_3d_p50_ms']:>9.1f} / {r['search_since_3d_p95_ms']:.1f} ms"),
            ("  agent_slug = one SAG", f"{r['search_agent_p50_ms']:>9.1f} / {r['search_agent_p95_ms']:.1f} ms"),
            ("list_runs p50 / p95", f"{r['list_runs_p50_ms']:>9.2f} / {r['list_runs_p95_ms']:.2f} ms"),
            (
                "  agent+status+since: ours / bare",
                f"{r['list_runs_filtered_p50_ms']:>9.2f} / {r['list_runs_filtered_bare_p50_ms']:.2f} ms",
            ),
            ("store", f"{r['partitions']} day partitions, {r['runs']:,} runs, {r['bytes'] / 2**20:,.0f} MiB"),
        ]
    if "embed_ratio" in r:
        lines += [
            ("append_events + embed process", f"{r['embed_eps']:>12,.0f} events/s"),
            ("ratio with / without embedding", f"{r['embed_ratio']:>12.2f}x   (target >= 0.80x)"),
            (
                "  embed backlog at end / catch-up",
                f"{r['embed_backlog_at_end']:>12,} events / {r['embed_catchup_s']:.1f} s "
                f"({r['embed_vectors']:,} vectors)",
            ),
        ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"  {k:<{width}}  {v}")


async def bench_embed(events: list[Event], batch: int, plain_eps: float) -> dict[str, Any]:
    """Ingest with ``magsag data embed --every 1s`` running as a separate process."""
    import signal
    import subprocess
    import threading

    from magsag.backends.sqlite.store import SQLiteStorageBackend
    from magsag.backends.vectors import vector_store

    tmp = Path(tempfile.mkdtemp(prefix="magsag-bench-embed-"))
    db = tmp / "embed.db"
    try:
        ours = SQLiteStorageBackend(db_path=db)
        await ours.initialize()
        env = {**os.environ, "MAGSAG_STORAGE_DB_PATH": str(db)}
        cmd = [sys.executable, "-m", "magsag", "data", "embed", "--every", "1s", "--json"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started = threading.Event()

        def drain() -> None:  # the job prints one JSON report per pass; the first means it is up
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith("}"):
                    started.set()

        threading.Thread(target=drain, daemon=True).start()
        started.wait(120)  # steady state: a long-running job has loaded its model before the load starts
        try:
            t_ours = 0.0
            for chunk in batches(events, batch):
                t = time.perf_counter()
                await ours.append_events(chunk)
                t_ours += time.perf_counter() - t
            store = vector_store(ours)
            backlog_end = await store.backlog()
            t = time.perf_counter()
            while await store.backlog() and time.perf_counter() - t < 600:
                await asyncio.sleep(0.5)
            catchup = time.perf_counter() - t
            vectors = await store.count()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        await ours.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    eps = len(events) / t_ours
    return {
        "embed_eps": eps,
        "embed_ratio": eps / plain_eps,
        "embed_backlog_at_end": backlog_end,
        "embed_catchup_s": catchup,
        "embed_vectors": vectors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    p.add_argument("--events", type=int, default=1_000_000, help="events to ingest (default 1,000,000)")
    p.add_argument("--batch", type=int, default=10_000, help="events per append_events call (default 10,000)")
    p.add_argument("--singles", type=int, default=20_000, help="one-at-a-time appends to time (default 20,000)")
    p.add_argument(
        "--dsn",
        default=os.environ.get("MAGSAG_TEST_PG_DSN") or os.environ.get("MAGSAG_STORAGE_DSN") or DEFAULT_DSN,
        help="PostgreSQL server (a fresh schema is created and dropped)",
    )
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL bench schemas")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--embed", action="store_true", help="sqlite: also ingest with `magsag data embed --every 1s` running"
    )
    p.add_argument(
        "--metrics",
        action="store_true",
        help="with the Prometheus append counters on (magsag.serve.instrument), as in `magsag data serve`",
    )
    args = p.parse_args(argv)
    if args.metrics:
        from magsag.serve.instrument import enable

        enable()
    if args.events < 1 or args.batch < 1:
        p.error("--events and --batch must be positive")

    t = time.perf_counter()
    events = demo_events(args.events, args.seed)
    gen_s = time.perf_counter() - t
    if args.backend == "sqlite":
        result = asyncio.run(bench_sqlite(events, args.batch, args.singles))
        if args.embed:
            result.update(asyncio.run(bench_embed(events, args.batch, result["ours_eps"])))
    else:
        from magsag.backends.errors import StorageError

        try:
            result = asyncio.run(bench_postgres(events, args.batch, args.dsn, args.singles, args.keep))
        except StorageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    result["generate_s"] = gen_s
    command = "python3 bench/ingest.py " + " ".join(argv if argv is not None else sys.argv[1:])
    save(f"ingest-{args.backend}", result, command=command)
    if args.json:
        print(json.dumps({"command": command, **result}, indent=2))
    else:
        show(result, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
