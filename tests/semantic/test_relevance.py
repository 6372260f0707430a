"""Relevance and agreement of semantic search on every tier, with the default embedder.

A labelled set of 200 messages in 10 families (tests/semantic/corpus.py): each family's query
must put at least 4 of its own family in the top 5 (precision@5 >= 0.8) on the hot SQLite
store, the hot PostgreSQL store with pgvector, and the lake (events tiered to Parquet, read
by DuckDB); and the same query gives the same ranking on every tier.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.embedding import load_embedder
from magsag.backends.vectors import embed_pending

from tests.semantic.corpus import QUERIES, labelled

NOW = "2026-03-10T12:00:00+00:00"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)  # days before NOW: tierable with hot_days=2


def corpus_events() -> list[dict[str, Any]]:
    out = []
    for i, (fam, msg) in enumerate(labelled()):
        out.append(
            {
                "run_id": f"run-{fam}-{i % 4}",
                "agent_slug": "agent-a" if i % 2 else "agent-b",
                "event_type": "log",
                "timestamp": T0 + timedelta(minutes=i),
                "level": "info" if fam in ("success", "delegation") else "error",
                "message": msg,
                "payload": {"family_hint": "none"},
            }
        )
    return out


async def load(st: Any) -> None:
    """The corpus, its runs ended (running runs are never tiered)."""
    events = corpus_events()
    await st.append_events(events)
    for run_id in sorted({e["run_id"] for e in events}):
        await st.update_run(run_id, status="failed", ended_at=T0 + timedelta(hours=5))


def family_of() -> dict[str, str]:
    return {msg: fam for fam, msg in labelled()}


async def rankings(storage: Any) -> dict[str, list[tuple[str, float]]]:
    out = {}
    for fam, query in QUERIES.items():
        hits = await storage.search_similar(text=query, limit=5)
        out[fam] = [(h["msg"], h["score"]) for h in hits]
    return out


def precision(ranks: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
    fam = family_of()
    return {f: sum(fam[m] == f for m, _ in hits) / 5 for f, hits in ranks.items()}


def same_ranking(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    """Equal order, except neighbours whose scores tie within float32 rounding."""
    if [m for m, _ in a] == [m for m, _ in b]:
        return True
    if sorted(m for m, _ in a) != sorted(m for m, _ in b):
        return False
    return all(abs(x[1] - y[1]) < 1e-4 for x, y in zip(a, b, strict=True))


@pytest.fixture
def pinned_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGSAG_NOW", NOW)


@pytest.fixture
async def sqlite_store(tmp_path: Path, pinned_now: None) -> AsyncIterator[Any]:
    from magsag.storage import open_storage

    async with open_storage(backend="sqlite", db_path=tmp_path / "s.db", lake_url=str(tmp_path / "lake")) as st:
        await load(st)
        yield st


@pytest.fixture
async def pgvector_store(pgvector_dsn: str, pinned_now: None, tmp_path: Path) -> AsyncIterator[Any]:
    from magsag.storage import open_storage

    schema = "sem_" + uuid.uuid4().hex[:8]
    async with open_storage(
        backend="postgres", dsn=pgvector_dsn, pg_schema=schema, lake_url=str(tmp_path / "lake")
    ) as st:
        await load(st)
        yield st
        await st.hot.read(lambda c: c.execute(f"DROP SCHEMA {schema} CASCADE"))


async def test_every_tier_finds_each_family_and_ranks_alike(sqlite_store: Any, pgvector_store: Any) -> None:
    emb = load_embedder()
    assert sqlite_store.capabilities.vector_search and pgvector_store.capabilities.vector_search
    for st in (sqlite_store, pgvector_store):
        report = await embed_pending(st, emb, batch=64)
        assert report["embedded"] == 200 and report["backlog"] == 0 and report["dim"] == 256
    hot_sqlite = await rankings(sqlite_store)
    hot_pg = await rankings(pgvector_store)

    # move every event to the lake (SQLite hot store, local Parquet lake); vectors go along
    from magsag.lakehouse.objstore import open_lake
    from magsag.lakehouse.tiering.job import run_tier

    report = await run_tier(sqlite_store.hot, open_lake(sqlite_store.lake.url), hot_days=2)
    assert report.events == 200, report
    assert await sqlite_store.hot.search_similar(text="out of memory", limit=5) == []  # nothing left hot
    lake = await rankings(sqlite_store)
    assert all(h["tier"] == "lake" for h in await sqlite_store.search_similar(text="timed out", limit=5))

    for name, ranks in (("hot sqlite", hot_sqlite), ("hot postgres", hot_pg), ("lake", lake)):
        p = precision(ranks)
        assert all(v >= 0.8 for v in p.values()), (name, p)
    for fam in QUERIES:
        assert same_ranking(hot_sqlite[fam], hot_pg[fam]), (fam, hot_sqlite[fam], hot_pg[fam])
        assert same_ranking(hot_sqlite[fam], lake[fam]), (fam, hot_sqlite[fam], lake[fam])


async def test_like_event_and_similar_runs(sqlite_store: Any) -> None:
    await embed_pending(sqlite_store, load_embedder())
    fam = family_of()
    probe = (await sqlite_store.search_similar(text="database connection refused", limit=1))[0]
    like = await sqlite_store.search_similar(event_id=probe["event_id"], limit=5)
    assert probe["event_id"] not in {h["event_id"] for h in like}
    assert sum(fam[h["msg"]] == "connection" for h in like) >= 4
    runs = await sqlite_store.similar_runs("run-timeout-0", limit=3)
    assert [r["run_id"] for r in runs][:3] == sorted(
        [r["run_id"] for r in runs][:3], key=lambda r: -next(x["score"] for x in runs if x["run_id"] == r)
    )
    assert {r["run_id"] for r in runs} <= {"run-timeout-1", "run-timeout-2", "run-timeout-3"}
    only = await sqlite_store.search_similar(text="out of memory", agent_slug="agent-a", limit=50)
    assert only and all(h["agent_slug"] == "agent-a" for h in only)


async def test_machine_postgres_without_pgvector_says_why(tmp_path: Path, pinned_now: None) -> None:
    from magsag.backends.errors import UnsupportedOperation

    from magsag.storage import open_storage
    from tests.conftest import PG_DSN, _drop_pg_schema, pg_unavailable

    if pg_unavailable():
        pytest.skip(pg_unavailable())
    schema = "semno_" + uuid.uuid4().hex[:8]
    try:
        async with open_storage(backend="postgres", dsn=PG_DSN, pg_schema=schema) as st:
            ok = st.capabilities.vector_search
            if ok:
                pytest.skip("this PostgreSQL has pgvector")
            with pytest.raises(UnsupportedOperation, match="no pgvector extension"):
                await st.search_similar(text="timeout")
            with pytest.raises(UnsupportedOperation, match="no pgvector extension"):
                await embed_pending(st, load_embedder())
    finally:
        await _drop_pg_schema(schema)
