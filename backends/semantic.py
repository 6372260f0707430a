"""``search_similar``, ``similar_runs`` and hybrid search, written once over any store's tiers.

A *tier* here is anything that answers ``search(vector, filters, limit)`` with event records
carrying ``score`` (cosine), best first: the hot store's :class:`~magsag.backends.vectors.VectorStore`
and, for the tiered API, the lake (``magsag.lakehouse.lake_vectors``). Results of all tiers
are merged by score (each event once, the hot copy first), then cut to ``limit``.

* The query vector: ``text`` embedded by the configured embedder, or the stored vector of
  ``event_id`` (embedded from its text when it has none yet).
* A run's vector (``similar_runs``): the mean of its error and critical events' vectors
  (all its events if none failed), computed when asked, so it follows the events wherever
  they live; runs are ranked by their best-matching event.
* Hybrid: reciprocal rank fusion (k=60) of the word-search ranking and the vector ranking.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from magsag.backends.base import check_limit
from magsag.backends.embedding import Embedder, event_text, load_embedder, normalize
from magsag.backends.errors import NotFoundError, UnsupportedOperation, ValidationError
from magsag.backends.vectors import Filters, filters, rrf, vector_store

Tier = Callable[[Any, Filters, int], Awaitable[list[dict[str, Any]]]]
Lookup = Callable[[str], Awaitable[Any]]
_RUN_EVENTS = 200


async def hot_tier(backend: Any, embedder: Embedder) -> Tier:
    store = vector_store(backend)
    ok, why = await store.available()
    if not ok:
        raise UnsupportedOperation(why)
    embedder.info.check(await store.stored_info(), store.where)

    async def search(vec: Any, flt: Filters, limit: int) -> list[dict[str, Any]]:
        hits = await store.search(vec, flt, limit)
        for h in hits:
            h["tier"] = "hot"
        return hits

    return search


async def _event_vector(backend: Any, embedder: Embedder, event_id: str, lookup: Lookup | None) -> Any:
    store = vector_store(backend)
    got = (await store.get([event_id])).get(event_id)
    if got is not None and got.shape[0] == embedder.dim:
        return got
    if lookup is not None:
        got = await lookup(event_id)
        if got is not None:
            return got
    rec = await find_event(backend, event_id)
    return embedder.embed([event_text(rec["type"], rec.get("msg"), rec.get("payload"))])[0]


async def find_event(backend: Any, event_id: str) -> dict[str, Any]:
    rec = await vector_store(backend).event(event_id)
    if rec is None:
        raise NotFoundError(f"no event {event_id!r}")
    return rec


async def merged(tiers: list[Tier], vec: Any, flt: Filters, limit: int) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for tier in tiers:
        for h in await tier(vec, flt, limit):
            if h["event_id"] not in seen:
                seen.add(h["event_id"])
                out.append(h)
    out.sort(key=lambda h: (-round(h["score"], 5), h["event_id"]))
    return out[:limit]


async def search_similar(
    backend: Any,
    tiers: list[Tier],
    embedder: Embedder,
    *,
    text: str | None,
    event_id: str | None,
    run_id: str | None,
    agent_slug: str | None,
    event_type: str | None,
    since: datetime | str | None,
    until: datetime | str | None,
    limit: int,
    lookup: Lookup | None = None,
) -> list[dict[str, Any]]:
    check_limit(limit)
    if (text is None) == (event_id is None):
        raise ValidationError("search_similar needs exactly one of text or event_id")
    if text is not None and not text.strip():
        raise ValidationError("search_similar: the text is empty")
    flt = filters(run_id, agent_slug, event_type, since, until, (event_id,) if event_id else ())
    if limit == 0:
        return []
    if text is not None:
        vec = embedder.embed([text])[0]
    else:
        vec = await _event_vector(backend, embedder, event_id, lookup)  # type: ignore[arg-type]
    return await merged(tiers, vec, flt, limit)


async def similar_runs(
    backend: Any, tiers: list[Tier], embedder: Embedder, run_id: str, limit: int
) -> list[dict[str, Any]]:
    import numpy as np

    check_limit(limit)
    if await backend.get_run(run_id) is None:
        raise NotFoundError(f"no run {run_id!r}")
    events = [e async for e in backend.get_events(run_id, limit=None)]
    if not events:
        raise NotFoundError(f"run {run_id!r} has no events to compare")
    failed = [e for e in events if e.get("level") in ("error", "critical")]
    chosen = (failed or events)[-_RUN_EVENTS:]
    vecs = embedder.embed([event_text(e["type"], e.get("msg"), e.get("payload")) for e in chosen])
    vec = normalize(np.asarray(vecs.mean(axis=0, keepdims=True)))[0]
    own = {e["event_id"] for e in events}
    best: dict[str, dict[str, Any]] = {}
    want = max(limit, 1) * 20 + len(own)
    for tier in tiers:
        for h in await tier(vec, Filters(), want):
            if h["event_id"] in own or h["run_id"] == run_id:
                continue
            cur = best.get(h["run_id"])
            if cur is None or h["score"] > cur["score"]:
                best[h["run_id"]] = h
    ranked = sorted(best.values(), key=lambda h: (-round(h["score"], 5), h["run_id"]))[:limit]
    out = []
    for h in ranked:
        run = await backend.get_run(h["run_id"]) or {"run_id": h["run_id"], "agent_slug": h["agent_slug"]}
        run = dict(run)
        run["score"] = h["score"]
        run["match_event_id"] = h["event_id"]
        run["match_msg"] = h.get("msg")
        out.append(run)
    return out


async def hybrid_search(
    storage: Any,
    text: str,
    *,
    agent_slug: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Word search and vector search fused by reciprocal rank (``score`` = the fused score).

    Each hit also carries ``text_rank`` and ``vector_rank`` (1-based, None when that list
    missed it). Candidates: the best ``2 * limit`` (at least 50) of each list.
    """
    check_limit(limit)
    depth = max(50, 2 * limit)
    words = await storage.search_text(text, agent_slug=agent_slug, since=since, until=until, limit=depth)
    if event_type is not None:
        words = [w for w in words if w["type"] == event_type]
    vectors = await storage.search_similar(
        text=text, agent_slug=agent_slug, event_type=event_type, since=since, until=until, limit=depth
    )
    recs = {h["event_id"]: h for h in vectors}
    recs.update({h["event_id"]: h for h in words if h["event_id"] not in recs})
    text_rank = {h["event_id"]: i for i, h in enumerate(words, 1)}
    vec_rank = {h["event_id"]: i for i, h in enumerate(vectors, 1)}
    out = []
    for eid, score in rrf([[h["event_id"] for h in words], [h["event_id"] for h in vectors]])[:limit]:
        rec = dict(recs[eid])
        rec["score"] = score
        rec["text_rank"] = text_rank.get(eid)
        rec["vector_rank"] = vec_rank.get(eid)
        out.append(rec)
    return out


async def embedder() -> Embedder:
    """The configured embedder (loaded once, off the event loop)."""
    import asyncio

    return await asyncio.to_thread(load_embedder)
