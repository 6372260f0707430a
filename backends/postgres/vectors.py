"""Event vectors in the PostgreSQL hot store: pgvector ``vector(d)`` side table with an HNSW index.

Only when the server offers the ``vector`` extension (``pg_available_extensions``): it is
created on first use (``CREATE EXTENSION IF NOT EXISTS vector``), in the schema it lands in,
and every type, operator class and operator is qualified with that schema. Without it
``available()`` says why and ``capabilities.vector_search`` is false.

``<schema>.event_vectors``: ``event_id`` (primary key), ``ts``, ``run_id``, ``agent_slug``,
``type`` (copied so filters apply inside the index scan; pgvector 0.8's iterative scan
keeps filtered searches complete), ``embedding vector(d)``; an HNSW index with
``vector_cosine_ops``. ``<schema>.meta`` records ``embedding_model``, ``embedding_dim`` and
``embed_cursor``: the embed job reads events in ``(tx, seq)`` order below the snapshot's
``xmin`` like ``stream_events`` does (see :mod:`magsag.backends.postgres.stream`), so no
event committed late is ever skipped.
"""

from __future__ import annotations

from typing import Any

from magsag.backends.embedding import EmbedderInfo, EmbeddingMismatch
from magsag.backends.schema import EVENT_COLUMNS, event_record
from magsag.backends.vectors import Filters, VectorStore

_COLS = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
EF_SEARCH = 100


async def probe(conn: Any) -> tuple[str | None, str | None]:
    """(schema the extension is installed in or None, available version or None)."""
    ext = await conn.fetchval(
        "SELECT n.nspname FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace WHERE x.extname = 'vector'"
    )
    avail = await conn.fetchval("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
    return ext, avail


def _vec_text(v: Any) -> str:
    return "[" + ",".join(f"{x:.8g}" for x in v.tolist()) + "]"


class PostgresVectors(VectorStore):
    def __init__(self, store: Any):
        self.store = store
        s = store.schema
        self.s = s
        self.where = f"PostgreSQL schema {s!r} at {store.where}"
        self._ext: str | None = None
        self._avail: str | None = None
        self._probed = False
        self._pos: tuple[str, int] | None = None

    async def _probe(self) -> None:
        if not self._probed:
            self._ext, self._avail = await self.store.read(probe)
            self._probed = True

    async def available(self) -> tuple[bool, str]:
        await self._probe()
        if self._ext or self._avail:
            return True, ""
        return False, (
            f"the PostgreSQL server at {self.store.where} has no pgvector extension "
            "(pg_available_extensions lacks 'vector'): install pgvector on the server for vector search; "
            "word search still works"
        )

    async def _meta(self, conn: Any) -> dict[str, str]:
        rows = await conn.fetch(
            f"SELECT key, value FROM {self.s}.meta WHERE key IN ('embedding_model', 'embedding_dim', 'embed_cursor')"
        )
        return {r["key"]: r["value"] for r in rows}

    async def stored_info(self) -> EmbedderInfo | None:
        async def q(c: Any) -> EmbedderInfo | None:
            m = await self._meta(c)
            return EmbedderInfo(m["embedding_model"], int(m["embedding_dim"])) if "embedding_model" in m else None

        return await self.store.read(q)

    async def _cursor(self, c: Any) -> tuple[str, int]:
        text = (await self._meta(c)).get("embed_cursor") or "0.0"
        tx, seq = text.split(".")
        return tx, int(seq)

    async def pending(self, limit: int) -> list[tuple[str, int, str, str | None, str]]:
        async def q(c: Any) -> list[Any]:
            tx, seq = await self._cursor(c)
            return await c.fetch(
                "SELECT e.event_id, e.ts, e.type, e.msg, e.payload::text, e.tx::text AS tx_id, e.seq "
                f"FROM {self.s}.events e WHERE (e.tx, e.seq) > ($1::text::xid8, $2::bigint) "
                "AND e.tx < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY e.tx, e.seq LIMIT $3",
                tx,
                seq,
                limit,
            )

        rows = await self.store.read(q)
        self._pos = (rows[-1]["tx_id"], rows[-1]["seq"]) if rows else None
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def backlog(self) -> int:
        async def q(c: Any) -> int:
            tx, seq = await self._cursor(c)
            return await c.fetchval(
                f"SELECT count(*) FROM {self.s}.events e WHERE (e.tx, e.seq) > ($1::text::xid8, $2::bigint)", tx, seq
            )

        return await self.store.read(q)

    async def count(self) -> int:
        async def q(c: Any) -> int:
            if await c.fetchval("SELECT to_regclass($1)", f"{self.s}.event_vectors") is None:
                return 0
            return await c.fetchval(f"SELECT count(*) FROM {self.s}.event_vectors")

        return await self.store.read(q)

    async def _ensure(self, c: Any, info: EmbedderInfo) -> None:
        if self._ext is None:
            await c.execute("CREATE EXTENSION IF NOT EXISTS vector")
            self._ext, self._avail = await probe(c)
        x, s = self._ext, self.s
        await c.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.event_vectors (event_id text PRIMARY KEY, ts timestamptz NOT NULL, "
            "run_id text NOT NULL, agent_slug text NOT NULL, type text NOT NULL, "
            f"embedding {x}.vector({info.dim}) NOT NULL)"
        )
        await c.execute(
            f"CREATE INDEX IF NOT EXISTS event_vectors_hnsw ON {s}.event_vectors "
            f"USING hnsw (embedding {x}.vector_cosine_ops)"
        )
        await c.execute(f"CREATE INDEX IF NOT EXISTS event_vectors_run ON {s}.event_vectors (run_id)")

    async def put(self, info: EmbedderInfo, ids: list[str], vectors: Any) -> None:
        pos = self._pos
        texts = [_vec_text(v) for v in vectors]

        async def op(c: Any) -> None:
            async with c.transaction():
                await self._ensure(c, info)
                m = await self._meta(c)
                stored = EmbedderInfo(m["embedding_model"], int(m["embedding_dim"])) if "embedding_model" in m else None
                info.check(stored, self.where)
                await c.executemany(
                    f"INSERT INTO {self.s}.meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    [("embedding_model", info.model), ("embedding_dim", str(info.dim))],
                )
                await c.execute(
                    f"INSERT INTO {self.s}.event_vectors (event_id, ts, run_id, agent_slug, type, embedding) "
                    f"SELECT e.event_id, e.ts, e.run_id, e.agent_slug, e.type, v.t::{self._ext}.vector "
                    f"FROM unnest($1::text[], $2::text[]) AS v(id, t) JOIN {self.s}.events e ON e.event_id = v.id "
                    "ON CONFLICT (event_id) DO UPDATE SET embedding = excluded.embedding",
                    ids,
                    texts,
                )
                if pos is not None:
                    await c.execute(
                        f"INSERT INTO {self.s}.meta (key, value) VALUES ('embed_cursor', $1) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        f"{pos[0]}.{pos[1]}",
                    )

        await self.store._write(op, "storing event vectors")

    async def get(self, event_ids: list[str]) -> dict[str, Any]:
        import numpy as np

        async def q(c: Any) -> list[Any]:
            if not event_ids or await c.fetchval("SELECT to_regclass($1)", f"{self.s}.event_vectors") is None:
                return []
            return await c.fetch(
                f"SELECT event_id, embedding::text FROM {self.s}.event_vectors WHERE event_id = ANY($1::text[])",
                event_ids,
            )

        return {r[0]: np.array(r[1].strip("[]").split(","), dtype=np.float32) for r in await self.store.read(q)}

    async def event(self, event_id: str) -> dict[str, Any] | None:
        cond, args = "e.event_id = $1", [event_id]
        try:  # UUIDv7 ids carry the event's millisecond: prune to its day partition
            ms = int(event_id.replace("-", "")[:12], 16)
            cond += " AND e.ts >= $2 AND e.ts < $3"
            args += [ms * 1000, ms * 1000 + 1000]
        except ValueError:
            pass
        row = await self.store.read(lambda c: c.fetchrow(f"SELECT {_COLS} FROM {self.s}.events e WHERE {cond}", *args))
        if row is None and len(args) > 1:  # an id that is not a UUIDv7 of its own time
            row = await self.store.read(
                lambda c: c.fetchrow(f"SELECT {_COLS} FROM {self.s}.events e WHERE e.event_id = $1", event_id)
            )
        return event_record(tuple(row)) if row is not None else None

    async def reset(self) -> None:
        async def op(c: Any) -> None:
            async with c.transaction():
                await c.execute(f"DROP TABLE IF EXISTS {self.s}.event_vectors")
                await c.execute(
                    f"DELETE FROM {self.s}.meta WHERE key IN ('embedding_model', 'embedding_dim', 'embed_cursor')"
                )

        await self.store._write(op, "dropping event vectors")

    async def prune(self) -> int:
        async def op(c: Any) -> int:
            if await c.fetchval("SELECT to_regclass($1)", f"{self.s}.event_vectors") is None:
                return 0
            status = await c.execute(
                f"DELETE FROM {self.s}.event_vectors v WHERE NOT EXISTS "
                f"(SELECT 1 FROM {self.s}.events e WHERE e.ts = v.ts AND e.event_id = v.event_id)"
            )
            return int(status.split()[-1])

        return await self.store._write(op, "pruning event vectors")

    async def search(self, query: Any, flt: Filters, limit: int, *, exact: bool = False) -> list[dict[str, Any]]:
        await self._probe()
        if self._ext is None:
            return []
        x, s = self._ext, self.s
        params: list[Any] = [_vec_text(query)]
        where = []
        for col, value in (("v.run_id", flt.run_id), ("v.agent_slug", flt.agent_slug), ("v.type", flt.event_type)):
            if value is not None:
                params.append(value)
                where.append(f"{col} = ${len(params)}")
        if flt.since_us is not None:
            params.append(flt.since_us)
            where.append(f"v.ts >= ${len(params)}")
        if flt.until_us is not None:
            params.append(flt.until_us)
            where.append(f"v.ts < ${len(params)}")
        if flt.exclude:
            params.append(list(flt.exclude))
            where.append(f"v.event_id <> ALL(${len(params)}::text[])")
        params.append(limit)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        dist = f"v.embedding OPERATOR({x}.<=>) $1::{x}.vector"
        # exact: order by an expression the index cannot serve (a full scan, exact cosine).
        order = f"({dist}) + 0" if exact else dist
        sql = (
            f"WITH hits AS MATERIALIZED (SELECT v.event_id, v.ts, {dist} AS d FROM {s}.event_vectors v{cond} "
            f"ORDER BY {order} LIMIT ${len(params)}) "
            f"SELECT {_COLS}, 1 - h.d AS score FROM hits h "
            f"JOIN {s}.events e ON e.ts = h.ts AND e.event_id = h.event_id "
            "ORDER BY h.d, e.event_id"
        )

        async def q(c: Any) -> list[Any]:
            if await c.fetchval("SELECT to_regclass($1)", f"{s}.event_vectors") is None:
                return []
            dim = await c.fetchval(f"SELECT value FROM {s}.meta WHERE key = 'embedding_dim'")
            if dim is not None and int(dim) != query.shape[0]:
                raise EmbeddingMismatch(
                    f"{self.where} holds vectors of dim {dim}; the query vector has dim {query.shape[0]}"
                )
            async with c.transaction():
                await c.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, limit)}")
                await c.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                return await c.fetch(sql, *params)

        out = []
        for r in await self.store.read(q):
            rec = event_record(tuple(r)[:-1])
            rec["score"] = float(r["score"])
            out.append(rec)
        return out
