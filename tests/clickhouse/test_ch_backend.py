"""The clickhouse read backend against the hot store it was tiered from, and its own rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from magsag.backends.base import AGGREGATIONS
from magsag.backends.errors import UnsupportedOperation
from magsag.backends.schema import Event, Run
from magsag.backends.sqlite.store import SQLiteStorageBackend
from magsag.lakehouse.clickhouse.backend import ClickHouseBackend, search_tokens
from magsag.lakehouse.clickhouse.engines import Engine
from magsag.lakehouse.clickhouse.load import load_lake
from magsag.lakehouse.objstore import Lake, open_lake

from tests.lake_builder import write_lake

Demo = tuple[list[Event], list[Run]]


@pytest.fixture
async def hot(tmp_path: Path, demo: Demo) -> AsyncIterator[SQLiteStorageBackend]:
    async with SQLiteStorageBackend(db_path=tmp_path / "hot.db") as store:
        await store.upsert_runs(demo[1])
        await store.append_events(demo[0])
        yield store


@pytest.fixture
async def ch(engine: Engine, local_lake: Lake) -> AsyncIterator[ClickHouseBackend]:
    load_lake(engine, local_lake)
    backend = ClickHouseBackend(engine=engine)
    await backend.initialize()
    yield backend
    await backend.close()


async def test_reads_match_the_hot_store(ch: ClickHouseBackend, hot: SQLiteStorageBackend) -> None:
    runs = await hot.list_runs(limit=10_000)
    assert await ch.list_runs(limit=10_000) == runs
    agent = runs[0]["agent_slug"]
    assert await ch.list_runs(agent_slug=agent, status="succeeded", limit=5, offset=1) == await hot.list_runs(
        agent_slug=agent, status="succeeded", limit=5, offset=1
    )
    for run in runs[:5]:
        assert await ch.get_run(run["run_id"]) == run
        ch_events = [e async for e in ch.get_events(run["run_id"])]
        assert ch_events == [e async for e in hot.get_events(run["run_id"])]
        assert [e async for e in ch.get_events(run["run_id"], event_type="metric", limit=2)] == [
            e async for e in hot.get_events(run["run_id"], event_type="metric", limit=2)
        ]
    for agg in AGGREGATIONS:
        a, b = await ch.query_metrics("tokens", aggregation=agg), await hot.query_metrics("tokens", aggregation=agg)
        assert a["count"] == b["count"] and a["value"] == pytest.approx(b["value"])
    a = await ch.search_text("rate limit", limit=1000)
    b = await hot.search_text("rate limit", limit=1000)
    assert a and {h["event_id"] for h in a} == {h["event_id"] for h in b}
    assert all(h["score"] >= a[-1]["score"] for h in a)


async def test_get_events_pages_through_equal_timestamps(
    chdb: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ts = "2025-10-23T08:00:00Z"
    events = [Event.create("r", "a", "log", ts, message=f"m{i:02d}", event_id=f"id-{i:02d}") for i in range(23)]
    lake = open_lake(str(tmp_path / "lake"))
    write_lake(lake, events)
    load_lake(chdb, lake)
    monkeypatch.setattr(ClickHouseBackend, "events_page_size", 5)
    async with ClickHouseBackend(engine=chdb) as b:
        assert [e["msg"] async for e in b.get_events("r")] == [f"m{i:02d}" for i in range(23)]
        assert [e["msg"] async for e in b.get_events("r", limit=7)] == [f"m{i:02d}" for i in range(7)]


async def test_search_is_case_insensitive_and_word_based(chdb: Engine, tmp_path: Path) -> None:
    msgs = ["ERROR: Disk full", "errors everywhere", "rate_limit hit", "日本語 エラー 発生", "plain"]
    events = [Event.create("r", "a", "log", f"2025-10-23T08:00:0{i}Z", message=m) for i, m in enumerate(msgs)]
    lake = open_lake(str(tmp_path / "lake"))
    write_lake(lake, events)
    load_lake(chdb, lake)
    async with ClickHouseBackend(engine=chdb) as b:
        assert [h["msg"] for h in await b.search_text("error")] == ["ERROR: Disk full"]  # words, not substrings
        assert [h["msg"] for h in await b.search_text("limit rate")] == ["rate_limit hit"]
        assert [h["msg"] for h in await b.search_text("エラー")] == ["日本語 エラー 発生"]
        assert [h["msg"] for h in await b.search_text("errors?", raw=True)] == ["errors everywhere"]  # RE2, cased
        assert [h["msg"] for h in await b.search_text("(?i)^error:", raw=True)] == ["ERROR: Disk full"]
        assert await b.search_text("disk", since="2025-10-23T08:00:01Z") == []
        assert await b.search_text("disk", until="2025-10-23T08:00:01Z") != []


def test_search_tokens_match_clickhouse_tokens() -> None:
    assert search_tokens('"Rate-Limit" AND (x)*') == ["rate", "limit", "and", "x"]
    assert search_tokens("a_b a_b") == ["a", "b"]
    assert search_tokens("'; DROP TABLE --") == ["drop", "table"]
    assert search_tokens("\\ ((( ") == []


async def test_writes_raise_unsupported(ch: ClickHouseBackend) -> None:
    assert ch.capabilities.append_event is False and ch.capabilities.search_text is True
    with pytest.raises(UnsupportedOperation, match="read-only"):
        await ch.append_event("r", "a", "log", "2025-10-23T00:00:00Z")
    with pytest.raises(UnsupportedOperation, match="read-only"):
        await ch.append_events([{"run_id": "r", "agent_slug": "a", "type": "log", "ts": "2025-10-23T00:00:00Z"}])
    with pytest.raises(UnsupportedOperation, match="read-only"):
        await ch.create_run("r", "a")
    with pytest.raises(UnsupportedOperation, match="read-only"):
        await ch.update_run("r", status="failed")
    with pytest.raises(UnsupportedOperation, match="does not vacuum"):
        await ch.vacuum()


async def test_documented_api_returns_it_unwrapped(local_lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lake is what ClickHouse holds: get_storage_backend must not merge it in a second time."""
    from magsag.storage import get_storage_backend
    from tests.clickhouse_helpers import ch_settings, new_database

    settings = ch_settings("chdb", new_database(), backend="clickhouse", lake_url=local_lake.url)
    storage = await get_storage_backend(settings)
    try:
        assert type(storage) is ClickHouseBackend
        assert await storage.list_runs() == []  # nothing loaded yet, although the lake has runs
        res = await storage.query_metrics("tokens")
        assert res["count"] == 0 and res["value"] is None
    finally:
        await storage.close()


def test_backend_is_found_by_name_through_its_entry_point() -> None:
    from importlib.metadata import entry_points

    from magsag.backends.registry import BUILTIN, ENTRY_POINT_GROUP, known_backends, resolve_backend_class

    assert resolve_backend_class("clickhouse") is ClickHouseBackend
    assert "clickhouse" not in BUILTIN and "clickhouse" in known_backends()
    (ep,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "clickhouse"]
    assert ep.value == "magsag.lakehouse.clickhouse.backend:ClickHouseBackend"
