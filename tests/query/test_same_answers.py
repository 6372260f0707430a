"""The same questions get the same answers whether the data is hot, in the lake, or split.

Each test loads the same demo data into two stores; one keeps it all hot, the other has
half of it tiered (three whole days in the lake, one day split event by event, the rest
hot). Answers through the documented API and through the DuckDB views must match.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from magsag.backends.base import AGGREGATIONS
from magsag.lakehouse import query

from tests.query.conftest import END, SPLIT_BEFORE, WHOLE_BEFORE, Pair, strip_tier


async def _events(store: Any, run_id: str, **kw: Any) -> list[dict[str, Any]]:
    return [e async for e in store.backend.get_events(run_id, **kw)]


async def test_data_really_is_split(pair: Pair) -> None:
    moved_events, moved_runs = pair.moved
    assert moved_events > 100 and moved_runs > 5
    con = query.connect(pair.tiered.settings)
    try:
        tiers = dict(con.sql("SELECT tier, count(*) FROM events GROUP BY 1").fetchall())
        days = con.sql("SELECT dt, list(DISTINCT tier ORDER BY tier) FROM events GROUP BY 1 ORDER BY 1").fetchall()
    finally:
        query.close(con)
    assert tiers["hot"] > 0 and tiers["lake"] == moved_events
    split_day = (SPLIT_BEFORE - timedelta(days=1)).date()
    assert dict(days)[split_day] == ["hot", "lake"]
    assert all(v == ["lake"] for d, v in days if d < WHOLE_BEFORE.date())
    assert any(v == ["hot"] for d, v in days if d >= SPLIT_BEFORE.date())


EVENT_FILTERS = (
    {"event_type": "metric"},
    {"level": "error"},
    {"limit": 3},
    {"limit": 0},
    {"event_type": "mcp.call", "limit": 1},
)


async def test_runs_and_events_through_the_api(pair: Pair) -> None:
    runs = await pair.hot.backend.list_runs(limit=1000)
    assert len(runs) > 15
    split_runs = 0
    for r in runs:
        assert await pair.tiered.backend.get_run(r["run_id"]) == r
        hot_ev = await _events(pair.hot, r["run_id"])
        tiered_ev = await _events(pair.tiered, r["run_id"])
        assert strip_tier(tiered_ev) == strip_tier(hot_ev), r["run_id"]
        split_runs += len({e["tier"] for e in tiered_ev}) == 2
        for kw in (
            {"event_type": "metric"},
            {"level": "error"},
            {"limit": 3},
            {"limit": 0},
            {"event_type": "mcp.call", "limit": 1},
        ):
            assert strip_tier(await _events(pair.tiered, r["run_id"], **kw)) == strip_tier(
                await _events(pair.hot, r["run_id"], **kw)
            ), (r["run_id"], kw)
    assert split_runs > 0
    assert await pair.tiered.backend.get_run("mag-nothere") is None
    assert await _events(pair.tiered, "mag-nothere") == []


LIST_CASES = [
    {},
    {"limit": 5},
    {"limit": 7, "offset": 4},
    {"limit": 1000, "offset": 20},
    {"status": "failed", "limit": 1000},
    {"agent_slug": "research-mag", "limit": 1000},
    {"since": WHOLE_BEFORE - timedelta(days=1), "until": SPLIT_BEFORE + timedelta(hours=6), "limit": 1000},
    {"until": WHOLE_BEFORE, "limit": 4, "offset": 2},
    {"since": SPLIT_BEFORE, "limit": 1000},
    {"limit": 0},
]


async def test_list_runs(pair: Pair) -> None:
    for kw in LIST_CASES:
        assert await pair.tiered.backend.list_runs(**kw) == await pair.hot.backend.list_runs(**kw), kw


SEARCHES = [
    ("timed out", {}),
    ("rate limit", {}),
    ("error", {}),
    ("pg query", {"agent_slug": "sql-analyst-sag"}),
    ("delegation", {"since": WHOLE_BEFORE - timedelta(days=1), "until": SPLIT_BEFORE}),
    ("metric tokens", {"until": WHOLE_BEFORE}),
    ("nomatchatall", {}),
    ("'; DROP TABLE events; --", {}),
]


async def test_search_finds_the_same_events(pair: Pair) -> None:
    for text, kw in SEARCHES:
        await _same_search(pair, text, kw)


async def _same_search(pair: Pair, text: str, kw: dict[str, Any]) -> None:
    hot = await pair.hot.backend.search_text(text, limit=10_000, **kw)
    tiered = await pair.tiered.backend.search_text(text, limit=10_000, **kw)
    assert {h["event_id"] for h in tiered} == {h["event_id"] for h in hot}
    assert len(tiered) == len(hot)
    assert all(h["tier"] in ("hot", "lake") for h in tiered)
    by_id = {h["event_id"]: h for h in hot}
    assert strip_tier(tiered) == strip_tier([by_id[h["event_id"]] for h in tiered])
    if len(hot) > 3:
        few = await pair.tiered.backend.search_text(text, limit=3, **kw)
        assert len(few) == 3 and {h["event_id"] for h in few} <= set(by_id)


async def test_search_ranks_across_tiers(pair: Pair) -> None:
    # The same words more often rank first in whichever tier they are.
    hits = await pair.tiered.backend.search_text("metric cost_usd", limit=5)
    assert hits and all("cost_usd" in h["msg"] for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


METRIC_CASES = [
    ("cost_usd", {}),
    ("duration_ms", {"agent_slug": "research-mag"}),
    ("tokens", {"since": WHOLE_BEFORE - timedelta(days=1), "until": SPLIT_BEFORE}),
    ("model_latency_ms", {"until": END}),
    ("nothing", {}),
]


async def test_query_metrics(pair: Pair) -> None:
    for metric, kw in METRIC_CASES:
        for aggregation in AGGREGATIONS:
            hot = await pair.hot.backend.query_metrics(metric, aggregation=aggregation, **kw)
            tiered = await pair.tiered.backend.query_metrics(metric, aggregation=aggregation, **kw)
            where = (metric, aggregation, kw)
            assert tiered["count"] == hot["count"], where
            if hot["value"] is None:
                assert tiered["value"] is None, where
            else:
                assert tiered["value"] == pytest.approx(hot["value"], rel=1e-9), where
    assert (await pair.tiered.backend.query_metrics("cost_usd", aggregation="count"))["count"] > 20


VIEW_QUERIES = [
    "SELECT count(*), count(DISTINCT event_id) FROM events",
    "SELECT count(*), count(DISTINCT run_id) FROM runs",
    "SELECT * EXCLUDE (tier) FROM events ORDER BY event_id",
    "SELECT * EXCLUDE (tier) FROM runs ORDER BY run_id",
    "SELECT agent_slug, dt, round(sum(cost_usd), 6), sum(tokens), count(*) FROM run_summary GROUP BY ALL ORDER BY ALL",
    "SELECT agent_slug, count(*) FILTER (WHERE status = 'failed') / count(*) FROM runs GROUP BY 1 ORDER BY 1",
    "SELECT server_id, tool, count(*), quantile_cont(latency_ms, 0.95) FROM mcp_calls GROUP BY ALL ORDER BY ALL",
    "SELECT name, count(*), round(sum(value), 4) FROM metrics GROUP BY 1 ORDER BY 1",
    "SELECT run_id, count(*) FROM events WHERE level = 'error' GROUP BY 1 ORDER BY 1",
    "SELECT count(*) FROM events WHERE msg ILIKE '%timed out%' AND dt >= DATE '2026-03-05'",
    "SELECT count(*) FROM costs",
]


def test_views_give_the_same_answers(pair: Pair) -> None:
    cons = [query.connect(store.settings, locked=True) for store in (pair.hot, pair.tiered)]
    try:
        for sql in VIEW_QUERIES:
            hot, tiered = (query.run_sql(sql, con=con).to_pylist() for con in cons)
            assert hot, sql
            assert tiered == hot, sql
    finally:
        for con in cons:
            query.close(con)


def test_polars_sees_the_same_rows(pair: Pair) -> None:
    from magsag.lakehouse import scan_events, scan_runs

    for scan, key in ((scan_events, "event_id"), (scan_runs, "run_id")):
        hot = scan(pair.hot.settings, hot=True).collect().sort(key)
        tiered = scan(pair.tiered.settings, hot=True).collect().sort(key)
        assert tiered.drop("tier").equals(hot.drop("tier"))
        assert set(tiered["tier"].unique()) == {"hot", "lake"}
        lake_only = scan(pair.tiered.settings).collect()
        assert 0 < lake_only.height < tiered.height


async def test_sqlite_read_modes_agree_and_switch(pair: Pair) -> None:
    """SQLite hot stores are attached by DuckDB, or read as a snapshot while this process has them open."""
    if pair.kind != "sqlite":
        pytest.skip("SQLite read modes")
    from magsag.lakehouse.tiered_backend import TieredBackend

    snapshot = [query.connect(s.settings) for s in (pair.hot, pair.tiered)]  # backends open: snapshot
    for store in (pair.hot, pair.tiered):
        await store.backend.close()
    attached = [query.connect(s.settings) for s in (pair.hot, pair.tiered)]  # nothing open: attach
    try:
        for con in snapshot:
            assert query._contexts[con].hot.mode == "snapshot"
        for con in attached:
            assert query._contexts[con].hot.mode == "attach"
        for sql in VIEW_QUERIES:
            answers = [query.run_sql(sql, con=c).to_pylist() for c in (*snapshot, *attached)]
            assert all(a == answers[0] for a in answers), sql
        # Opening the store through the API switches attached connections of this process to snapshots.
        store = TieredBackend.from_settings(pair.tiered.settings)
        await store.initialize()
        try:
            ctx = query._contexts[attached[1]]
            assert ctx.hot.mode == "snapshot"
            dbs = {r[0] for r in attached[1].sql("SELECT database_name FROM duckdb_databases()").fetchall()}
            assert "magsag_hot" not in dbs
            await store.append_event("late-run", "late-agent", "log", END, message="written after connect")
            await store.read(lambda c: None)  # the single append is committed to SQLite
            before = query.run_sql("SELECT count(*) AS n FROM events", con=attached[1]).to_pylist()[0]["n"]
            assert query.refresh(attached[1]) is True  # a snapshot is re-read by refresh()
            after = query.run_sql("SELECT count(*) AS n FROM events", con=attached[1]).to_pylist()[0]["n"]
            assert after == before + 1
        finally:
            await store.close()
    finally:
        for con in (*snapshot, *attached):
            query.close(con)
