"""Event vectors in the SQLite hot store: float32 blobs beside ``events``, exact cosine search.

Why exact and not an index extension: Python's ``sqlite3`` on the supported machines is
built without ``enable_load_extension``, so ``sqlite-vec`` (or any loadable index) cannot be
loaded; the search is an exact scan instead, done by numpy over a matrix this process keeps
of the stored vectors (read once, then only the rows added since). Hot stores hold days,
not years: 100k vectors of 256 dimensions are 100 MB and scan in a few milliseconds
(bench/semantic.py). Filters (run, agent, type, time) pick the candidate rows in SQL first.

Table ``event_vectors`` (created on first use, not by a schema migration): ``vid`` (insertion
order, the cache's key), ``event_id``, ``seq`` (the event's ``events.seq``: the embed job
resumes after the highest one, since ``seq`` is commit order under the single writer),
``vec`` (little-endian float32). ``magsag_meta`` records ``embedding_model``/``embedding_dim``.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from magsag.backends.embedding import EmbedderInfo
from magsag.backends.schema import event_record
from magsag.backends.sqlite import schema as ddl
from magsag.backends.vectors import Filters, VectorStore, from_blobs, to_blob, top_k

DDL = (
    "CREATE TABLE IF NOT EXISTS event_vectors ("
    "vid INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, seq INTEGER NOT NULL, vec BLOB NOT NULL) STRICT",
    "CREATE INDEX IF NOT EXISTS event_vectors_seq ON event_vectors (seq)",
)
_MAX_SEQ = "(SELECT coalesce(max(seq), 0) FROM event_vectors)"


def _has_table(conn: sqlite3.Connection) -> bool:
    return ddl.has_table(conn, "event_vectors")


def _info(conn: sqlite3.Connection) -> EmbedderInfo | None:
    rows = dict(
        conn.execute("SELECT key, value FROM magsag_meta WHERE key IN ('embedding_model', 'embedding_dim')").fetchall()
    )
    if "embedding_model" not in rows:
        return None
    return EmbedderInfo(rows["embedding_model"], int(rows["embedding_dim"]))


class SQLiteVectors(VectorStore):
    def __init__(self, store: Any):
        self.store = store
        self.where = f"the SQLite store {store.db_path}"
        self._lock = threading.Lock()
        self._ids: list[str] = []
        self._vids: list[int] = []
        self._matrix: Any = None
        self._max_vid = 0
        self._dim = 0

    async def available(self) -> tuple[bool, str]:
        try:
            import numpy  # noqa: F401
        except ImportError:
            return False, "vector search needs numpy: pip install 'magsag-storage[semantic]'"
        return True, ""

    async def stored_info(self) -> EmbedderInfo | None:
        return await self.store.read(_info)

    async def pending(self, limit: int) -> list[tuple[str, int, str, str | None, str]]:
        def q(c: sqlite3.Connection) -> list[Any]:
            floor = c.execute(f"SELECT {_MAX_SEQ}").fetchone()[0] if _has_table(c) else 0
            return c.execute(
                "SELECT event_id, ts, type, msg, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (floor, limit)
            ).fetchall()

        return await self.store.read(q)

    async def backlog(self) -> int:
        def q(c: sqlite3.Connection) -> int:
            floor = c.execute(f"SELECT {_MAX_SEQ}").fetchone()[0] if _has_table(c) else 0
            return c.execute("SELECT count(*) FROM events WHERE seq > ?", (floor,)).fetchone()[0]

        return await self.store.read(q)

    async def count(self) -> int:
        return await self.store.read(
            lambda c: c.execute("SELECT count(*) FROM event_vectors").fetchone()[0] if _has_table(c) else 0
        )

    async def put(self, info: EmbedderInfo, ids: list[str], vectors: Any) -> None:
        rows = [(eid, to_blob(v), eid) for eid, v in zip(ids, vectors, strict=True)]

        def op(c: sqlite3.Connection) -> None:
            for stmt in DDL:
                c.execute(stmt)
            info.check(_info(c), self.where)
            c.executemany(
                "INSERT INTO magsag_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                [("embedding_model", info.model), ("embedding_dim", str(info.dim))],
            )
            c.executemany(
                "INSERT OR REPLACE INTO event_vectors (event_id, seq, vec) "
                "SELECT ?, seq, ? FROM events WHERE event_id = ?",
                rows,
            )

        await self.store.write(op)

    async def get(self, event_ids: list[str]) -> dict[str, Any]:
        def q(c: sqlite3.Connection) -> tuple[list[Any], EmbedderInfo | None]:
            if not event_ids or not _has_table(c):
                return [], None
            out = []
            for i in range(0, len(event_ids), 500):
                chunk = event_ids[i : i + 500]
                marks = ", ".join("?" * len(chunk))
                out += c.execute(
                    f"SELECT event_id, vec FROM event_vectors WHERE event_id IN ({marks})", chunk
                ).fetchall()
            return out, _info(c)

        rows, info = await self.store.read(q)
        if not rows or info is None:
            return {}
        matrix = from_blobs([r[1] for r in rows], info.dim)
        return {r[0]: matrix[i] for i, r in enumerate(rows)}

    async def event(self, event_id: str) -> dict[str, Any] | None:
        return (await self.store.read(lambda c: _records(c, [event_id]))).get(event_id)

    async def reset(self) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute("DROP TABLE IF EXISTS event_vectors")
            c.execute("DELETE FROM magsag_meta WHERE key IN ('embedding_model', 'embedding_dim')")

        await self.store.write(op)
        with self._lock:
            self._ids, self._vids, self._matrix, self._max_vid = [], [], None, 0

    async def prune(self) -> int:
        def orphans(c: sqlite3.Connection) -> bool:  # on a reader: the writer is not held for the check
            if not _has_table(c):
                return False
            n_vec = c.execute("SELECT count(*) FROM event_vectors").fetchone()[0]
            n_joined = c.execute(
                "SELECT count(*) FROM event_vectors v JOIN events e ON e.event_id = v.event_id"
            ).fetchone()[0]
            return n_vec != n_joined

        if not await self.store.read(orphans):
            return 0

        def op(c: sqlite3.Connection) -> int:
            return c.execute(
                "DELETE FROM event_vectors WHERE NOT EXISTS "
                "(SELECT 1 FROM events e WHERE e.event_id = event_vectors.event_id)"
            ).rowcount

        return await self.store.write(op)

    # ------------------------------------------------------------------ search
    def _refresh(self, c: sqlite3.Connection, dim: int) -> None:
        """Bring the in-process matrix up to date (rows added since, or a full reload)."""
        import numpy as np

        total = c.execute("SELECT count(*) FROM event_vectors").fetchone()[0]
        with self._lock:
            if self._matrix is not None and self._dim == dim and len(self._ids) == total:
                newest = c.execute("SELECT coalesce(max(vid), 0) FROM event_vectors").fetchone()[0]
                if newest == self._max_vid:
                    return
            full = self._matrix is None or self._dim != dim
            start = 0 if full else self._max_vid
            rows = c.execute(
                "SELECT vid, event_id, vec FROM event_vectors WHERE vid > ? ORDER BY vid", (start,)
            ).fetchall()
            if not full and len(self._ids) + len(rows) != total:  # rows were replaced or deleted
                full = True
                rows = c.execute("SELECT vid, event_id, vec FROM event_vectors ORDER BY vid").fetchall()
            block = from_blobs([r[2] for r in rows], dim)
            if full:
                self._ids, self._vids, self._matrix = [r[1] for r in rows], [r[0] for r in rows], block
            else:
                self._ids += [r[1] for r in rows]
                self._vids += [r[0] for r in rows]
                self._matrix = np.vstack([self._matrix, block]) if len(rows) else self._matrix
            self._dim = dim
            self._max_vid = self._vids[-1] if self._vids else 0

    async def search(self, query: Any, flt: Filters, limit: int, *, exact: bool = True) -> list[dict[str, Any]]:
        import numpy as np

        where, params = [], []
        for col, value in (("e.run_id", flt.run_id), ("e.agent_slug", flt.agent_slug), ("e.type", flt.event_type)):
            if value is not None:
                where.append(f"{col} = ?")
                params.append(value)
        if flt.since_us is not None:
            where.append("e.ts >= ?")
            params.append(flt.since_us)
        if flt.until_us is not None:
            where.append("e.ts < ?")
            params.append(flt.until_us)

        def q(c: sqlite3.Connection) -> list[tuple[Any, float]]:
            info = _info(c) if _has_table(c) else None
            if info is None or limit == 0:
                return []
            if query.shape[0] != info.dim:
                from magsag.backends.embedding import EmbeddingMismatch

                raise EmbeddingMismatch(
                    f"{self.where} holds vectors of model {info.model!r} (dim {info.dim}); the query vector has dim "
                    f"{query.shape[0]}"
                )
            self._refresh(c, info.dim)
            with self._lock:
                ids, matrix, vids = self._ids, self._matrix, self._vids
            if where:
                sql = (
                    "SELECT v.vid FROM event_vectors v JOIN events e ON e.event_id = v.event_id WHERE "
                    + " AND ".join(where)
                )
                wanted = {r[0] for r in c.execute(sql, params)}
                pos = np.fromiter((i for i, v in enumerate(vids) if v in wanted), dtype=np.int64)
                sub, sub_ids = matrix[pos], [ids[i] for i in pos.tolist()]
            else:
                sub, sub_ids = matrix, ids
            k = limit + len(flt.exclude) + 16
            while True:
                hits = [(sub_ids[i], s) for i, s in top_k(sub, query, k)]
                hits = [h for h in hits if h[0] not in flt.exclude]
                by_id = _records(c, [h[0] for h in hits])
                found = [(by_id[eid], s) for eid, s in hits if eid in by_id]  # vectors of deleted events drop out
                if len(found) >= limit or k >= len(sub_ids):
                    return found[:limit]
                k *= 4

        out = []
        for rec, score in await self.store.read(q):
            rec["score"] = score
            out.append(rec)
        return out


def _records(c: sqlite3.Connection, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(event_ids), 500):
        chunk = event_ids[i : i + 500]
        marks = ", ".join("?" * len(chunk))
        for row in c.execute(f"SELECT {ddl.EVENT_SELECT} FROM events e WHERE e.event_id IN ({marks})", chunk):
            out[row[0]] = event_record(row)
    return out
