"""Stream latency: from ``append_event`` returning to a ``stream_events`` consumer receiving it.

    python3 bench/stream.py [--backend sqlite|postgres|both] [--seconds 5] [--rates 1000,10000] [--json]

For each store and each load (events per second, written as single ``append_event``
calls by 8 tasks, paced every 10 ms), one consumer in the same process follows
``stream_events()``; the latency of an event is the time from its ``append_event``
returning to the consumer receiving it. Beside it, in the same run and at the same rate,
the bare engine's own wake mechanism:

* **SQLite**: a writer thread commits each row on its own connection and sets a
  ``threading.Event``; a reader thread waits on it and reads the new rows on its own
  connection (what an in-process wake-up plus a read can do, with no store around it).
* **PostgreSQL**: one asyncpg connection inserts each row (autocommit) into a bare table
  whose statement trigger NOTIFYs; another LISTENs and reads the new rows when notified.

Results go to ``bench/results/stream.json`` (and stdout). The floor, and why ours sits
above it, is printed under the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from magsag.backends.schema import utc_now

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import save

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TASKS = 8
TICK_S = 0.01


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(lat_s: list[float], sent: int, seconds: float) -> dict[str, Any]:
    return {
        "events": sent,
        "received": len(lat_s),
        "achieved_eps": round(sent / seconds),
        "p50_ms": round(pct(lat_s, 0.5) * 1000, 3),
        "p99_ms": round(pct(lat_s, 0.99) * 1000, 3),
        "max_ms": round(max(lat_s) * 1000, 3) if lat_s else None,
        "mean_ms": round(statistics.fmean(lat_s) * 1000, 3) if lat_s else None,
    }


# --------------------------------------------------------------------- ours


async def ours(backend: Any, rate: int, seconds: float) -> dict[str, Any]:
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    done = asyncio.Event()
    total = int(rate * seconds)
    started = asyncio.Event()

    async def consume() -> None:
        stream = backend.stream_events(run_id="bench", agent_slug="agent")
        started.set()
        async for e in stream:
            received[e["event_id"]] = time.perf_counter()
            if len(received) >= total:
                done.set()
                return

    consumer = asyncio.create_task(consume())
    await started.wait()
    await backend.append_event("bench", "warm", "log", utc_now(), message="warm-up")  # starts the stream
    await asyncio.sleep(0.3)
    per_tick = max(1, round(rate * TICK_S))
    n = 0
    t0 = time.perf_counter()

    async def one(i: int) -> None:
        eid = await backend.append_event("bench", "agent", "log", utc_now(), message=f"e{i}")
        sent[eid] = time.perf_counter()

    while n < total:
        due = t0 + (n // per_tick) * TICK_S
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        batch = min(per_tick, total - n)
        # TASKS concurrent appenders share the tick's events (as agents in one process would).
        chunks = [range(n + k, n + batch, TASKS) for k in range(min(TASKS, batch))]

        async def worker(idx: range) -> None:
            for i in idx:
                await one(i)

        await asyncio.gather(*(worker(c) for c in chunks))
        n += batch
    elapsed = time.perf_counter() - t0
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    # An event can reach the consumer before its append_event call has returned (the commit
    # is visible before the caller's task resumes): that counts as zero latency.
    lat = [max(0.0, received[eid] - t) for eid, t in sent.items() if eid in received]
    return summary(lat, total, elapsed)


# ------------------------------------------------------------------- bare sqlite


def bare_sqlite(path: Path, rate: int, seconds: float) -> dict[str, Any]:
    w = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    w.execute("PRAGMA journal_mode = WAL")
    w.execute("PRAGMA synchronous = NORMAL")
    w.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, msg TEXT)")
    r = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    wake = threading.Event()
    stop = threading.Event()
    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    total = int(rate * seconds)

    def reader() -> None:
        last = 0
        while not stop.is_set():
            wake.wait(1.0)
            wake.clear()
            for seq, _msg in r.execute("SELECT seq, msg FROM t WHERE seq > ? ORDER BY seq", (last,)).fetchall():
                received[seq] = time.perf_counter()
                last = seq
            if len(received) >= total:
                return

    th = threading.Thread(target=reader)
    th.start()
    per_tick = max(1, round(rate * TICK_S))
    t0 = time.perf_counter()
    for i in range(total):
        due = t0 + (i // per_tick) * TICK_S
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        cur = w.execute("INSERT INTO t (msg) VALUES (?)", (f"e{i}",))  # autocommit: one commit per row
        sent[cur.lastrowid] = time.perf_counter()  # type: ignore[index]
        wake.set()
    elapsed = time.perf_counter() - t0
    th.join(60)
    stop.set()
    w.close()
    r.close()
    return summary([max(0.0, received[k] - t) for k, t in sent.items() if k in received], total, elapsed)


# ----------------------------------------------------------------- bare postgres


async def bare_postgres(dsn: str, rate: int, seconds: float) -> dict[str, Any]:
    import asyncpg

    schema = f"bench_stream_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    await admin.execute(f"CREATE TABLE {schema}.t (seq bigserial PRIMARY KEY, msg text)")
    await admin.execute(
        f"CREATE FUNCTION {schema}.n() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_notify('{schema}', ''); RETURN NULL; END $$"
    )
    await admin.execute(f"CREATE TRIGGER n AFTER INSERT ON {schema}.t FOR EACH STATEMENT EXECUTE FUNCTION {schema}.n()")
    writers = [await asyncpg.connect(dsn) for _ in range(TASKS)]
    listener = await asyncpg.connect(dsn)
    reader = await asyncpg.connect(dsn)
    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    total = int(rate * seconds)
    wake = asyncio.Event()
    done = asyncio.Event()

    await listener.add_listener(schema, lambda *a: wake.set())

    async def consume() -> None:
        last = 0
        while True:
            await wake.wait()
            wake.clear()
            # Concurrent writers commit out of seq order: move past a seq only once everything
            # below it arrived (no aborts here, so seqs have no gaps), else a late one is lost.
            for row in await reader.fetch(f"SELECT seq FROM {schema}.t WHERE seq > $1 ORDER BY seq", last):
                received.setdefault(row["seq"], time.perf_counter())
            while last + 1 in received:
                last += 1
            if len(received) >= total:
                done.set()
                return

    consumer = asyncio.create_task(consume())
    per_tick = max(1, round(rate * TICK_S))
    n = 0
    t0 = time.perf_counter()
    try:
        while n < total:
            due = t0 + (n // per_tick) * TICK_S
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            batch = min(per_tick, total - n)

            async def worker(conn: Any, idx: range) -> None:
                for i in idx:
                    seq = await conn.fetchval(f"INSERT INTO {schema}.t (msg) VALUES ($1) RETURNING seq", f"e{i}")
                    sent[seq] = time.perf_counter()

            await asyncio.gather(
                *(worker(writers[k], range(n + k, n + batch, TASKS)) for k in range(min(TASKS, batch)))
            )
            n += batch
        elapsed = time.perf_counter() - t0
        await asyncio.wait_for(done.wait(), 60)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        for c in (*writers, listener, reader):
            await c.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    return summary([max(0.0, received[k] - t) for k, t in sent.items() if k in received], total, elapsed)


# ----------------------------------------------------------------------- main


async def run_sqlite(rates: list[int], seconds: float) -> list[dict[str, Any]]:
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    out = []
    for rate in rates:
        tmp = Path(tempfile.mkdtemp(prefix="magsag-stream-"))
        try:
            async with SQLiteStorageBackend(db_path=tmp / "ours.db") as backend:
                mine = await ours(backend, rate, seconds)
            bare = await asyncio.to_thread(bare_sqlite, tmp / "bare.db", rate, seconds)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out.append({"backend": "sqlite", "rate_eps": rate, "ours": mine, "bare": bare})
    return out


async def run_postgres(rates: list[int], seconds: float, dsn: str) -> list[dict[str, Any]]:
    import asyncpg
    from magsag.backends.postgres.store import PostgresStorageBackend

    out = []
    for rate in rates:
        schema = f"bench_stream_ours_{secrets.token_hex(3)}"
        backend = PostgresStorageBackend(dsn, schema=schema)
        await backend.initialize()
        try:
            mine = await ours(backend, rate, seconds)
        finally:
            await backend.close()
            conn = await asyncpg.connect(dsn)
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
            await conn.close()
        bare = await bare_postgres(dsn, rate, seconds)
        out.append({"backend": "postgres", "rate_eps": rate, "ours": mine, "bare": bare})
    return out


FLOOR = {
    "sqlite": (
        "floor: one commit of the writer thread. append_event returns once the row is in the crash journal, "
        "before it is in SQLite; the consumer can read it only after the writer's next group commit (then the "
        "commit hook wakes it, and it reads one page on a reader thread). The bare side commits before it "
        "returns, so its latency is wake + read only."
    ),
    "postgres": (
        "floor: NOTIFY delivery + one read round trip, as on the bare side. Ours adds the horizon check (rows "
        "of a transaction wait until every older transaction on the server has ended) and a keyset read on "
        "(tx, seq) over the day partitions."
    ),
}


def show(results: list[dict[str, Any]], command: str) -> None:
    print(f"$ {command}")
    print(f"{'store':<10}{'events/s':>10}  {'ours p50 / p99 ms':>22}  {'bare p50 / p99 ms':>22}  {'achieved':>9}")
    for r in results:
        o, b = r["ours"], r["bare"]
        print(
            f"{r['backend']:<10}{r['rate_eps']:>10,}  {o['p50_ms']:>10.2f} / {o['p99_ms']:<9.2f}  "
            f"{b['p50_ms']:>10.2f} / {b['p99_ms']:<9.2f}  {o['achieved_eps']:>9,}"
        )
    for name in sorted({r["backend"] for r in results}):
        print(f"{name}: {FLOOR[name]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--seconds", type=float, default=5.0, help="load duration per case (default 5)")
    p.add_argument("--rates", default="1000,10000", help="events per second, comma-separated")
    p.add_argument("--dsn", default=os.environ.get("MAGSAG_TEST_PG_DSN") or DEFAULT_DSN)
    p.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    p.add_argument("--no-write", action="store_true", help="do not write bench/results/stream.json")
    args = p.parse_args(argv)
    rates = [int(x) for x in args.rates.split(",") if x.strip()]
    results: list[dict[str, Any]] = []
    if args.backend in ("sqlite", "both"):
        results += asyncio.run(run_sqlite(rates, args.seconds))
    if args.backend in ("postgres", "both"):
        results += asyncio.run(run_postgres(rates, args.seconds, args.dsn))
    command = "python3 bench/stream.py " + " ".join(argv if argv is not None else sys.argv[1:])
    figures = {"floor": FLOOR, "results": results}
    if not args.no_write:
        save("stream", figures, command=command.strip())
    if args.json:
        print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    else:
        show(results, command.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
