"""Vectors in the hot stores: the contract each store implements, the embed job, ranking helpers.

A hot store keeps one vector per event in a side table beside ``events`` (never on the
append path). :func:`embed_pending` is the background step (``magsag data embed``): it
reads events that have no vector yet in batches, embeds :func:`event_text` of each and
stores the vectors; it is resumable (a killed run loses at most one batch of work,
nothing is written twice) and reports the backlog. SQLite: ``backends/sqlite/vectors.py``
(float32 blobs, exact cosine); PostgreSQL: ``backends/postgres/vectors.py`` (pgvector,
HNSW), see docs/search.md.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from magsag.backends.embedding import Embedder, EmbedderInfo, event_text
from magsag.backends.errors import UnsupportedOperation, ValidationError

RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009)


@dataclass(frozen=True)
class Filters:
    """The filters every similarity search takes."""

    run_id: str | None = None
    agent_slug: str | None = None
    event_type: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    exclude: tuple[str, ...] = ()


class VectorStore(abc.ABC):
    """One hot store's vectors (see the module doc)."""

    where: str = "the hot store"

    @abc.abstractmethod
    async def available(self) -> tuple[bool, str]:
        """(can store and search vectors, why not)."""

    @abc.abstractmethod
    async def stored_info(self) -> EmbedderInfo | None:
        """Model and dimension of the stored vectors (None: none yet)."""

    @abc.abstractmethod
    async def pending(self, limit: int) -> list[tuple[str, int, str, str | None, str]]:
        """Up to ``limit`` events without a vector: (event_id, ts_us, type, msg, payload_json), oldest first."""

    @abc.abstractmethod
    async def backlog(self) -> int:
        """How many events have no vector."""

    @abc.abstractmethod
    async def count(self) -> int:
        """How many vectors are stored."""

    @abc.abstractmethod
    async def put(self, info: EmbedderInfo, ids: list[str], vectors: Any) -> None:
        """Store vectors (rows of a float32 array) of events ``ids``; records ``info`` on the first."""

    @abc.abstractmethod
    async def get(self, event_ids: list[str]) -> dict[str, Any]:
        """The stored vectors of these events (absent ids are left out)."""

    @abc.abstractmethod
    async def search(self, query: Any, flt: Filters, limit: int, *, exact: bool = False) -> list[dict[str, Any]]:
        """Events nearest ``query`` (a unit float32 vector) with ``score`` (cosine), best first."""

    @abc.abstractmethod
    async def event(self, event_id: str) -> dict[str, Any] | None:
        """One event record by id (None: not in this store)."""

    @abc.abstractmethod
    async def reset(self) -> None:
        """Forget every vector and the recorded model (re-embed from scratch)."""

    @abc.abstractmethod
    async def prune(self) -> int:
        """Delete vectors whose events are gone (tiered or vacuumed); return how many."""


def vector_store(backend: Any) -> VectorStore:
    """The vector store of a hot store (sqlite, postgres); raises UnsupportedOperation otherwise."""
    hot = getattr(backend, "hot", backend)
    cached = getattr(hot, "_magsag_vectors", None)
    if cached is not None:
        return cached
    store: VectorStore
    modules = [cls.__module__ for cls in type(hot).__mro__]
    if "magsag.backends.sqlite.store" in modules:
        from magsag.backends.sqlite.vectors import SQLiteVectors

        store = SQLiteVectors(hot)
    elif "magsag.backends.postgres.store" in modules:
        from magsag.backends.postgres.vectors import PostgresVectors

        store = PostgresVectors(hot)
    else:
        raise UnsupportedOperation(f"the {hot.name} backend keeps no vectors (capabilities.vector_search is false)")
    hot._magsag_vectors = store
    return store


async def embed_pending(
    backend: Any, embedder: Embedder, *, batch: int = 4096, max_events: int | None = None
) -> dict[str, Any]:
    """Embed events that have no vector yet, ``batch`` at a time; return a report with the backlog."""
    if batch < 1:
        raise ValidationError(f"batch must be >= 1, got {batch}")
    store = vector_store(backend)
    ok, why = await store.available()
    if not ok:
        raise UnsupportedOperation(why)
    embedder.info.check(await store.stored_info(), store.where)
    started = time.perf_counter()
    pruned = await store.prune()
    done = 0
    embed_s = 0.0
    while max_events is None or done < max_events:
        want = batch if max_events is None else min(batch, max_events - done)
        rows = await store.pending(want)
        if not rows:
            break
        t = time.perf_counter()
        vecs = embedder.embed([event_text(r[2], r[3], r[4]) for r in rows])
        embed_s += time.perf_counter() - t
        await store.put(embedder.info, [r[0] for r in rows], vecs)
        done += len(rows)
        if len(rows) < want:
            break
    return {
        "embedded": done,
        "pruned": pruned,
        "backlog": await store.backlog(),
        "vectors": await store.count(),
        "model": embedder.model,
        "dim": embedder.dim,
        "seconds": round(time.perf_counter() - started, 3),
        "embed_seconds": round(embed_s, 3),
    }


# ------------------------------------------------------------------ ranking helpers


def to_blob(vec: Any) -> bytes:
    import numpy as np

    return np.asarray(vec, dtype="<f4").tobytes()


def from_blobs(blobs: list[bytes], dim: int) -> Any:
    import numpy as np

    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)


def top_k(matrix: Any, query: Any, k: int) -> list[tuple[int, float]]:
    """Exact cosine (rows and query are unit vectors): (row index, score), best first, ties by index."""
    import numpy as np

    if matrix.shape[0] == 0 or k <= 0:
        return []
    scores = matrix @ np.asarray(query, dtype=np.float32)
    k = min(k, scores.shape[0])
    idx = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    order = sorted(idx.tolist(), key=lambda i: (-float(scores[i]), i))
    return [(i, float(scores[i])) for i in order]


def rrf(rankings: list[list[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: score(d) = sum over lists of 1 / (k + rank), rank from 1."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def filters(
    run_id: str | None,
    agent_slug: str | None,
    event_type: str | None,
    since: datetime | str | None,
    until: datetime | str | None,
    exclude: tuple[str, ...] = (),
) -> Filters:
    from magsag.backends.schema import coerce_datetime, to_us

    s = coerce_datetime(since, "since", required=False)
    u = coerce_datetime(until, "until", required=False)
    return Filters(run_id, agent_slug, event_type, to_us(s) if s else None, to_us(u) if u else None, exclude)
