"""Similarity search over the lake: DuckDB ``array_cosine_similarity`` on the events files' ``embedding``.

Only files whose vectors were made by the query's model are read (the model and dimension
sit in each file's Parquet metadata, read once per file: files are immutable); a file of
another model is skipped, never mixed in (``lake_models`` lists what the lake holds). The
scan is exact: DuckDB reads just the filtered columns and the vectors, and computes the
cosine per row. The ``vss`` extension's HNSW index lives in a DuckDB database, not in Parquet,
so it does not help a query over immutable files that change with every tiering run; it
is measured beside the scan in bench/semantic.py.
"""

from __future__ import annotations

import threading
from typing import Any

from magsag.backends.embedding import EmbedderInfo
from magsag.backends.schema import event_record
from magsag.backends.vectors import Filters
from magsag.lakehouse.lakefiles import LakeSnapshot
from magsag.lakehouse.lakeformat import embedding_info
from magsag.lakehouse.lakeread import EVENT_SELECT, LakeReader, day_range

_infos: dict[str, tuple[str, int] | None] = {}
_infos_lock = threading.Lock()


def file_embedding(reader: LakeReader, uri: str) -> tuple[str, int] | None:
    """(model, dim) of a lake file's vectors (cached per file)."""
    with _infos_lock:
        if uri in _infos:
            return _infos[uri]
    import pyarrow.parquet as pq

    lake = reader.lake
    path = uri if lake.is_local else lake.fs._strip_protocol(uri)
    info = embedding_info(pq.read_schema(path, filesystem=None if lake.is_local else lake.fs))
    with _infos_lock:
        _infos[uri] = info
    return info


def vector_literal(vec: Any) -> str:
    return "[" + ", ".join(f"{float(x):.8g}" for x in vec.tolist()) + f"]::FLOAT[{len(vec)}]"


def _files(reader: LakeReader, snap: LakeSnapshot, info: EmbedderInfo, flt: Filters) -> list[str]:
    from magsag.backends.schema import from_us

    since = from_us(flt.since_us) if flt.since_us is not None else None
    until = from_us(flt.until_us) if flt.until_us is not None else None
    return [
        f.uri
        for f in snap.of("events", *day_range(since, until))
        if file_embedding(reader, f.uri) == (info.model, info.dim)
    ]


def search(reader: LakeReader, query: Any, info: EmbedderInfo, flt: Filters, limit: int) -> list[tuple[Any, ...]]:
    """Rows in EVENT_COLUMNS order + the cosine score, best first (ties by event id)."""
    where, params = ["embedding IS NOT NULL"], []
    for col, value in (("run_id", flt.run_id), ("agent_slug", flt.agent_slug), ("type", flt.event_type)):
        if value is not None:
            where.append(f"{col} = ?")
            params.append(value)
    if flt.since_us is not None:
        where.append("ts >= make_timestamp(?::BIGINT)::TIMESTAMPTZ")
        params.append(flt.since_us)
    if flt.until_us is not None:
        where.append("ts < make_timestamp(?::BIGINT)::TIMESTAMPTZ")
        params.append(flt.until_us)
    if flt.exclude:
        where.append("event_id NOT IN (" + ", ".join("?" for _ in flt.exclude) + ")")
        params.extend(flt.exclude)
    lit = vector_literal(query)

    def build(snap: LakeSnapshot) -> tuple[str, list[Any]] | None:
        uris = _files(reader, snap, info, flt)
        if not uris:
            return None
        sql = (
            f"SELECT {EVENT_SELECT}, array_cosine_similarity(embedding::FLOAT[{info.dim}], {lit}) AS score "
            f"FROM {reader._source(uris)} WHERE {' AND '.join(where)} ORDER BY score DESC, event_id LIMIT ?"
        )
        return sql, [*params, limit]

    return reader._query(build)


def vectors_of(reader: LakeReader, event_ids: list[str]) -> dict[str, tuple[Any, tuple[str, int]]]:
    """Stored lake vectors of these events: id -> (vector, (model, dim))."""
    import numpy as np

    if not event_ids:
        return {}
    out: dict[str, tuple[Any, tuple[str, int]]] = {}
    snap = reader.snapshots.snapshot()
    by_info: dict[tuple[str, int], list[str]] = {}
    for f in snap.of("events"):
        info = file_embedding(reader, f.uri)
        if info is not None:
            by_info.setdefault(info, []).append(f.uri)
    marks = ", ".join("?" for _ in event_ids)
    for info, uris in by_info.items():

        def build(_: LakeSnapshot, uris: list[str] = uris) -> tuple[str, list[Any]]:
            return (
                f"SELECT event_id, embedding FROM {reader._source(uris)} "
                f"WHERE event_id IN ({marks}) AND embedding IS NOT NULL",
                list(event_ids),
            )

        for eid, vec in reader._query(build):
            out[eid] = (np.asarray(vec, dtype=np.float32), info)
    return out


async def tiers(storage: Any) -> tuple[Any, list[Any], Any]:
    """The embedder, the searches of a tiered store (hot, then lake when there is one), a lake vector lookup."""
    import asyncio

    from magsag.backends import semantic

    embedder = await semantic.embedder()
    found = [await semantic.hot_tier(storage.hot, embedder)]
    if not await storage._has_lake():
        return embedder, found, None
    reader = storage._lake_reader()

    async def lake(vec: Any, flt: Filters, limit: int) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(search, reader, vec, embedder.info, flt, limit)
        out = []
        for r in rows:
            rec = event_record(r[:-1])
            rec["score"] = float(r[-1])
            rec["tier"] = "lake"
            out.append(rec)
        return out

    async def lookup(event_id: str) -> Any:
        got = (await asyncio.to_thread(vectors_of, reader, [event_id])).get(event_id)
        if got is None or got[1] != (embedder.model, embedder.dim):
            return None
        return got[0]

    found.append(lake)
    return embedder, found, lookup
