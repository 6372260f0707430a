"""End to end: demo -> hot store -> `magsag data tier` -> lake -> `magsag data load clickhouse`
-> the clickhouse backend answers what the hot store answered; late data reloads its days only."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from magsag.backends.sqlite.store import SQLiteStorageBackend
from magsag.lakehouse.clickhouse.backend import ClickHouseBackend
from magsag.lakehouse.settings import StorageSettings, load_settings

from tests.cli_helpers import magsag
from tests.clickhouse_helpers import ch_env, new_database


async def _hot_snapshot(db: Path) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    async with SQLiteStorageBackend(db_path=db) as hot:
        runs = await hot.list_runs(limit=100_000)
        return runs, {r["run_id"]: [e async for e in hot.get_events(r["run_id"])] for r in runs}


async def _ch_snapshot(settings: StorageSettings, run_ids: list[str] | None = None) -> dict[str, Any]:
    async with ClickHouseBackend(settings) as ch:
        runs = await ch.list_runs(limit=100_000)
        ids = run_ids or [r["run_id"] for r in runs[:20]]
        events = {rid: [e async for e in ch.get_events(rid)] for rid in ids}
        return {"runs": runs, "events": events, "run": {rid: await ch.get_run(rid) for rid in ids}}


async def _late_run(db: Path, day: str) -> None:
    async with SQLiteStorageBackend(db_path=db) as hot:
        start = f"{day}T23:00:00+00:00"
        await hot.create_run("late-run", "late-agent", started_at=start, status="succeeded")
        await hot.append_event("late-run", "late-agent", "log", start, message="late arrival")
        await hot.update_run("late-run", status="succeeded", ended_at=f"{day}T23:00:05+00:00")


async def _search(settings: StorageSettings, text: str) -> list[dict[str, Any]]:
    async with ClickHouseBackend(settings) as ch:
        return await ch.search_text(text)


def test_tiered_lake_loads_and_reads_like_the_hot_store(tmp_path: Path) -> None:
    db = tmp_path / "hot.db"
    env = {
        **ch_env("chdb", new_database()),
        "MAGSAG_STORAGE_DB_PATH": str(db),
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
        "MAGSAG_NOW": "2026-03-10T18:00:00Z",  # demo, tier and load share one pinned clock (same data every run)
    }
    settings = load_settings(
        clickhouse_path=env["MAGSAG_CLICKHOUSE_PATH"], clickhouse_database=env["MAGSAG_CLICKHOUSE_DATABASE"]
    )
    assert magsag("data", "demo", "--days", "4", "--runs-per-day", "3", env=env).code == 0
    runs_before, events_before = asyncio.run(_hot_snapshot(db))
    res = magsag("data", "tier", "--hot-days", "1", env=env)
    assert res.code == 0, res.err
    res = magsag("data", "load", "clickhouse", "--json", env=env)
    assert res.code == 0, res.err
    report = res.json()
    assert report["loaded_partitions"] > 0 and report["mode"] == "server"

    got = asyncio.run(_ch_snapshot(settings))
    loaded = got["runs"]
    assert loaded and len(loaded) < len(runs_before)  # the newest day and running runs stayed hot
    by_id = {r["run_id"]: r for r in runs_before}
    assert all(r == by_id[r["run_id"]] for r in loaded)
    last_day = max(p["dt"] for p in report["partitions"])
    for rid, events in got["events"].items():
        assert events == [e for e in events_before[rid] if e["ts"][:10] <= last_day]

    # late data for a day already tiered: the next tier writes a new file, the next load reloads that day only
    day = loaded[-1]["started_at"][:10]
    asyncio.run(_late_run(db, day))
    assert magsag("data", "tier", "--hot-days", "1", env=env).code == 0
    again = magsag("data", "load", "clickhouse", "--json", env=env).json()
    changed = {(p["dataset"], p["dt"]) for p in again["partitions"] if p["action"] != "current"}
    assert changed == {("events", day), ("runs", day)}
    assert again["loaded_partitions"] == 2
    late = asyncio.run(_ch_snapshot(settings, ["late-run"]))
    assert late["run"]["late-run"]["status"] == "succeeded"
    assert [e["msg"] for e in late["events"]["late-run"]] == ["late arrival"]
    assert [h["run_id"] for h in asyncio.run(_search(settings, "late arrival"))] == ["late-run"]
