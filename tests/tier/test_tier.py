"""The tiering job against a real hot store and a real lake (local folder and S3).

Each test checks the invariant that matters: every event is in exactly one of hot store
and lake, and the multiset of events in both equals what was stored.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from magsag.backends.schema import EVENT_COLUMNS, Event, day_of_us, from_us, to_us
from magsag.backends.tiering.protocol import tier_source
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.tiering.job import run_tier

from tests.lake_fixtures import LakeCase
from tests.tier.helpers import CUTOFF_US, END, HOT_DAYS, HotCase, day_us, lake_events, lake_runs, old

pytestmark = pytest.mark.asyncio


async def tier(hot: HotCase, lake_case: LakeCase, **kw):  # type: ignore[no-untyped-def]
    return await run_tier(hot.backend, lake_case.lake, hot_days=kw.pop("hot_days", HOT_DAYS), now=END, **kw)


async def assert_conserved(hot: HotCase, lake_case: LakeCase, original: list[tuple]) -> None:
    hot_rows = await hot.event_rows()
    lake_rows = lake_events(lake_case.lake)
    assert Counter(hot_rows) + Counter(lake_rows) == Counter(original)
    assert not set(hot_rows) & set(lake_rows), "an event is in both hot store and lake"
    assert len(set(lake_rows)) == len(lake_rows), "an event is twice in the lake"


async def test_dry_run_changes_nothing(hot: HotCase, lake_case: LakeCase) -> None:
    before_ev, before_runs = await hot.event_rows(), await hot.run_rows()
    rep = await tier(hot, lake_case, dry_run=True)
    data = rep.as_dict()
    assert data["dry_run"] and data["days"] == 3
    assert data["events"] == len(old(before_ev))
    assert [p["day"] for p in data["plan"]] == ["2026-03-06", "2026-03-07", "2026-03-08"]
    assert await hot.event_rows() == before_ev and await hot.run_rows() == before_runs
    assert lake_events(lake_case.lake) == []
    assert await tier_source(hot.backend).claims() == []
    assert not lake_case.lake.fs.exists(lake_case.lake.path(layout.MANIFEST_DIR))


async def test_tier_moves_exactly_the_old_days(hot: HotCase, lake_case: LakeCase) -> None:
    original, runs_before = await hot.event_rows(), await hot.run_rows()
    rep = await tier(hot, lake_case)
    assert [d.day.isoformat() for d in rep.days] == ["2026-03-06", "2026-03-07", "2026-03-08"]
    lake_rows = lake_events(lake_case.lake)
    assert Counter(lake_rows) == Counter(old(original))
    assert all(r[1] >= CUTOFF_US for r in await hot.event_rows())
    await assert_conserved(hot, lake_case, original)
    assert rep.events == len(lake_rows) and rep.bytes > 0 and rep.ratio is not None
    # runs: the terminal runs that started before the cutoff, nothing else
    moved_runs = [r for r in runs_before if r[4] < CUTOFF_US and r[3] != "running"]
    assert Counter(lake_runs(lake_case.lake)) == Counter(moved_runs)
    assert Counter(await hot.run_rows()) + Counter(moved_runs) == Counter(runs_before)
    # one file per dataset and day, each with a manifest entry, sorted as the layout promises
    for dataset in layout.DATASETS:
        parts = manifest.partitions(lake_case.lake, dataset)
        assert [d.isoformat() for d in parts] == ["2026-03-06", "2026-03-07", "2026-03-08"]
        assert all(len(es) == 1 for es in parts.values())
    claims = await tier_source(hot.backend).claims()
    assert [c.state for c in claims] == ["done"] * 3
    # every file is sorted as the layout promises (agent, run, time)
    for e in manifest.live_entries(lake_case.lake, layout.EVENTS):
        with lake_case.lake.fs.open(lake_case.lake.path(e.path), "rb") as f:
            t = pq.read_table(f, columns=["agent_slug", "run_id", "ts", "event_id"])
        keys = list(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True))
        assert keys == sorted(keys) and len(keys) == e.rows


async def test_engines_read_the_lake_by_glob(hot: HotCase, lake_case: LakeCase) -> None:
    original = await hot.event_rows()
    await tier(hot, lake_case)
    left = Counter(old(original))
    lake = lake_case.lake
    glob = lake.uri(layout.data_glob(layout.EVENTS))
    cols = ", ".join("epoch_us(ts)" if c == "ts" else f'"{c}"' for c in EVENT_COLUMNS)
    con = duckdb.connect()
    if not lake.is_local:
        con.register_filesystem(lake.fs)
    got = con.execute(f"SELECT {cols}, dt FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()
    assert Counter(tuple(r[:-1]) for r in got) == left
    assert all(r[-1] == day_of_us(r[1]) for r in got)  # DuckDB reads dt=YYYY-MM-DD as a DATE
    df = pl.read_parquet(glob, hive_partitioning=True, storage_options=lake.storage_options() or None)
    df = df.with_columns(pl.col("ts").dt.epoch("us"))
    assert Counter(df.select(list(EVENT_COLUMNS)).rows()) == left
    assert set(df["dt"].to_list()) == {date(2026, 3, 6), date(2026, 3, 7), date(2026, 3, 8)}
    assert Counter(lake_events(lake)) == left  # pyarrow dataset


async def test_idempotent_rerun(hot: HotCase, lake_case: LakeCase) -> None:
    original = await hot.event_rows()
    await tier(hot, lake_case)
    files = sorted(lake_case.lake.fs.glob(lake_case.lake.path("events/*/*.parquet")))
    again = await tier(hot, lake_case)
    assert again.days == [] and again.events == 0
    assert sorted(lake_case.lake.fs.glob(lake_case.lake.path("events/*/*.parquet"))) == files
    await assert_conserved(hot, lake_case, original)


async def test_running_runs_stay_hot_until_they_end(hot: HotCase, lake_case: LakeCase) -> None:
    b = hot.backend
    start = from_us(day_us(3))  # 2026-03-07 noon
    await b.create_run("long-run", "research-mag", started_at=start)
    for i in range(5):
        await b.append_event("long-run", "research-mag", "log", start + timedelta(hours=i * 6), message=f"step {i}")
    original = await hot.event_rows()
    rep = await tier(hot, lake_case)
    assert rep.held_events == 5
    lake_ids = {r[0] for r in lake_events(lake_case.lake)}
    long_ids = {r[0] for r in original if r[2] == "long-run"}
    assert not long_ids & lake_ids and "long-run" not in {r[0] for r in lake_runs(lake_case.lake)}
    assert long_ids <= {r[0] for r in await hot.event_rows()}
    # the run ends: its old events and its record go to their (already tiered) partitions
    await b.update_run("long-run", status="succeeded", ended_at=start + timedelta(days=1))
    rep2 = await tier(hot, lake_case)
    assert sorted(d.day.isoformat() for d in rep2.days) == ["2026-03-07", "2026-03-08"]
    assert long_ids <= {r[0] for r in lake_events(lake_case.lake)}
    assert "long-run" in {r[0] for r in lake_runs(lake_case.lake)}
    assert len(manifest.live_entries(lake_case.lake, layout.EVENTS, date(2026, 3, 7))) == 2  # a new file
    await assert_conserved(hot, lake_case, original)


async def test_late_data_becomes_a_new_file(hot: HotCase, lake_case: LakeCase) -> None:
    await tier(hot, lake_case)
    day = date(2026, 3, 7)
    late = [
        Event.create("sag-late0001", "summarizer-sag", "log", from_us(day_us(3) + i), message="late", level="info")
        for i in range(3)
    ]
    await hot.backend.append_events(late)
    await hot.backend.update_run("sag-late0001", status="succeeded")
    original = Counter(await hot.event_rows()) + Counter(lake_events(lake_case.lake))
    rep = await tier(hot, lake_case)
    assert [d.day for d in rep.days] == [day] and rep.days[0].events == 3
    entries = manifest.live_entries(lake_case.lake, layout.EVENTS, day)
    assert len(entries) == 2 and sorted(e.rows for e in entries)[0] == 3
    assert Counter(await hot.event_rows()) + Counter(lake_events(lake_case.lake)) == original
    assert {e.event_id for e in late} <= {r[0] for r in lake_events(lake_case.lake)}


async def test_reinserted_events_are_not_duplicated(hot: HotCase, lake_case: LakeCase) -> None:
    """Loading the same demo again after tiering puts tiered event ids back into the hot store;
    the next run writes none of them twice and removes them from the hot store."""
    from tests.tier.helpers import load

    original = await hot.event_rows()
    await tier(hot, lake_case)
    await load(hot)  # the same seed: the same event ids
    assert len(old(await hot.event_rows())) == len(old(original))
    rep = await tier(hot, lake_case)
    assert rep.events == 0 and sum(d.duplicates for d in rep.days) == len(old(original))
    await assert_conserved(hot, lake_case, original)


async def test_late_event_of_a_tiered_run_does_not_stay_hot(hot: HotCase, lake_case: LakeCase) -> None:
    """A late event of a run whose record is already in the lake creates a running placeholder
    run in the hot store; the job treats it as an orphan: the event moves, the placeholder goes."""
    await tier(hot, lake_case)
    run_id, agent = next((r[0], r[1]) for r in lake_runs(lake_case.lake))
    await hot.backend.append_event(run_id, agent, "log", from_us(day_us(2)), message="late note")
    placeholder = await hot.backend.get_run(run_id)
    assert placeholder is not None and placeholder["status"] == "running"
    before = Counter(await hot.event_rows()) + Counter(lake_events(lake_case.lake))
    rep = await tier(hot, lake_case)
    assert rep.orphan_runs == [run_id]
    assert await hot.backend.get_run(run_id) is None
    assert Counter(await hot.event_rows()) + Counter(lake_events(lake_case.lake)) == before
    assert next(r for r in lake_runs(lake_case.lake) if r[0] == run_id)[3] != "running"  # the real record stays


async def test_hot_days_zero_and_empty_store(hot_factory, lake_case: LakeCase) -> None:  # type: ignore[no-untyped-def]
    empty = await hot_factory(demo=False)
    rep = await run_tier(empty.backend, lake_case.lake, hot_days=0, now=END)
    assert rep.days == [] and rep.events == 0
    assert to_us(END) > 0  # hot_days=0 cuts at today's midnight: nothing of today moves
