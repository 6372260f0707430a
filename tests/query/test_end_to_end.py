"""Demo -> the real tiering job (``magsag data tier``) -> queries: nothing lost, nothing twice.

The same demo goes into two hot stores; one is tiered by the CLI, the other stays all
hot. Every answer (API, views, CLI) must be the same, now coming from two tiers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.schema import utc_now
from magsag.lakehouse import query
from magsag.lakehouse.settings import load_settings
from magsag.lakehouse.tiered_backend import TieredBackend

from magsag.ingest.demo import load_demo
from tests.cli_helpers import magsag
from tests.conftest import make_postgres, make_sqlite
from tests.query.conftest import strip_tier
from tests.query.test_same_answers import LIST_CASES, SEARCHES, VIEW_QUERIES


def _settings(env: dict[str, str]) -> Any:
    kw = {k.removeprefix("MAGSAG_STORAGE_").lower(): v for k, v in env.items() if k.startswith("MAGSAG_STORAGE_")}
    return load_settings(**kw)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_demo_tier_query(kind: str, tmp_path: Path) -> None:
    make = make_sqlite if kind == "sqlite" else make_postgres
    end = utc_now().replace(second=0, microsecond=0)  # the pinned clock (tests/clock.py)
    stores, cleanups = [], []
    for name in ("hot", "tiered"):
        folder = tmp_path / name
        folder.mkdir()
        hot, env, cleanup = make(folder)
        cleanups.append(cleanup)
        env = {**env, "MAGSAG_STORAGE_LAKE_URL": str(folder / "lake")}
        backend = TieredBackend(hot, lake_url=env["MAGSAG_STORAGE_LAKE_URL"])
        await backend.initialize()
        await load_demo(backend, days=8, runs_per_day=3, seed=21, end=end)
        await backend.close()
        stores.append(env)
    try:
        res = await asyncio.to_thread(magsag, "data", "tier", "--hot-days", "3", "--json", env=stores[1])
        assert res.code == 0, res.err
        await _compare(*stores)
    finally:
        for c in cleanups:
            if c is not None:
                await c()


async def _compare(hot_env: dict[str, str], tiered_env: dict[str, str]) -> None:
    hot_s, tiered_s = _settings(hot_env), _settings(tiered_env)
    con = query.connect(tiered_s)
    try:
        tiers = dict(con.sql("SELECT tier, count(*) FROM events GROUP BY 1").fetchall())
    finally:
        query.close(con)
    assert tiers.get("lake", 0) > 100 and tiers.get("hot", 0) > 0, tiers
    for sql in VIEW_QUERIES:
        assert query.run_sql(sql, tiered_s).to_pylist() == query.run_sql(sql, hot_s).to_pylist(), sql
    hot, tiered = TieredBackend.from_settings(hot_s), TieredBackend.from_settings(tiered_s)
    await hot.initialize()
    await tiered.initialize()
    try:
        for kw in LIST_CASES:
            assert await tiered.list_runs(**kw) == await hot.list_runs(**kw), kw
        for r in await hot.list_runs(limit=10_000):
            assert await tiered.get_run(r["run_id"]) == r
            a = [e async for e in tiered.get_events(r["run_id"])]
            b = [e async for e in hot.get_events(r["run_id"])]
            assert strip_tier(a) == strip_tier(b)
        for text, kw in SEARCHES:
            a = await tiered.search_text(text, limit=10_000, **kw)
            b = await hot.search_text(text, limit=10_000, **kw)
            assert sorted(h["event_id"] for h in a) == sorted(h["event_id"] for h in b), text
        for agg in ("avg", "p95", "count"):
            a = await tiered.query_metrics("cost_usd", aggregation=agg)
            b = await hot.query_metrics("cost_usd", aggregation=agg)
            assert a["count"] == b["count"] and a["value"] == pytest.approx(b["value"])
    finally:
        await hot.close()
        await tiered.close()
    lake_run = query.run_sql("SELECT run_id FROM lake_runs LIMIT 1", tiered_s).to_pylist()[0]["run_id"]
    shown = await asyncio.to_thread(magsag, "data", "query", "--run-id", lake_run, "--json", env=tiered_env)
    assert shown.code == 0 and shown.json()["tier"]["where"] == "lake"
    stats = (await asyncio.to_thread(magsag, "data", "stats", "--json", env=tiered_env)).json()
    assert stats["lake"]["datasets"]["events"]["rows"] == tiers["lake"]
