"""``archive``: the same machinery in copy mode to another destination; the vacuum guard."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from magsag.backends.schema import NOW_ENV, Event, from_us
from magsag.backends.tiering.protocol import COPY, MOVE
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.settings import load_settings
from magsag.lakehouse.tiering.destination import dest_key
from magsag.lakehouse.tiering.job import run_tier

from magsag.storage import vacuum_storage
from tests.cli_helpers import magsag
from tests.lake_fixtures import LakeCase
from tests.tier.helpers import CUTOFF_US, END, HOT_DAYS, HotCase, day_us, lake_events, lake_runs, old

pytestmark = pytest.mark.asyncio
OLD_DAYS = ["2026-03-06", "2026-03-07", "2026-03-08"]


async def test_archive_copies_without_deleting(hot: HotCase, lake_case: LakeCase) -> None:
    original, runs = await hot.event_rows(), await hot.run_rows()
    rep = await run_tier(hot.backend, lake_case.lake, hot_days=HOT_DAYS, now=END, mode=COPY, job_prefix="archive")
    assert [d.day.isoformat() for d in rep.days] == OLD_DAYS
    assert all(d.deleted_events == 0 for d in rep.days)
    assert Counter(await hot.event_rows()) == Counter(original)  # the hot store is untouched
    assert Counter(lake_events(lake_case.lake)) == Counter(old(original))
    assert Counter(lake_runs(lake_case.lake)) == Counter(r for r in runs if r[4] < CUTOFF_US)
    # again: nothing new to copy, nothing written twice
    again = await run_tier(hot.backend, lake_case.lake, hot_days=HOT_DAYS, now=END, mode=COPY)
    assert again.days == [] and again.events == 0
    # late data for an archived day: only the new rows go, as a new file of the partition
    late = Event.create("sag-late0002", "summarizer-sag", "log", from_us(day_us(3)), message="late")
    await hot.backend.append_events([late])
    await hot.backend.update_run("sag-late0002", status="failed")
    third = await run_tier(hot.backend, lake_case.lake, hot_days=HOT_DAYS, now=END, mode=COPY)
    assert [(d.day.isoformat(), d.events, d.runs) for d in third.days] == [("2026-03-07", 1, 1)]  # + its new run
    assert len(manifest.live_entries(lake_case.lake, layout.EVENTS, third.days[0].day)) == 2
    assert Counter(lake_events(lake_case.lake)) == Counter(old(original)) + Counter([late.row()])


async def test_archive_delete_moves(hot: HotCase, lake_case: LakeCase) -> None:
    original = await hot.event_rows()
    rep = await run_tier(hot.backend, lake_case.lake, hot_days=HOT_DAYS, now=END, mode=MOVE, job_prefix="archive")
    assert sum(d.deleted_events for d in rep.days) == len(old(original))
    assert Counter(await hot.event_rows()) + Counter(lake_events(lake_case.lake)) == Counter(original)
    assert not old(await hot.event_rows())


async def test_archive_after_copy_then_delete_clears_hot(hot: HotCase, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Copy first, then `archive --delete` to the same place: nothing is written twice and the
    hot rows already archived are deleted."""
    dest = open_lake(str(tmp_path / "archive"))
    original = await hot.event_rows()
    await run_tier(hot.backend, dest, hot_days=HOT_DAYS, now=END, mode=COPY)
    files = sorted(dest.fs.glob(dest.path("events/*/*.parquet")))
    rep = await run_tier(hot.backend, dest, hot_days=HOT_DAYS, now=END, mode=MOVE)
    assert rep.events == 0 and sum(d.duplicates for d in rep.days) == len(old(original))
    assert sorted(dest.fs.glob(dest.path("events/*/*.parquet"))) == files
    assert not old(await hot.event_rows())
    assert Counter(await hot.event_rows()) + Counter(lake_events(dest)) == Counter(original)


async def test_vacuum_guard_refuses_days_not_archived(hot: HotCase, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(NOW_ENV, END.isoformat())  # vacuum's cut-off reads the pinned clock
    dest_url = str(tmp_path / "archive")
    settings = load_settings(archive_enabled=True, archive_destination=dest_url, hot_days=HOT_DAYS)
    original = await hot.event_rows()
    hot_days = HOT_DAYS
    res = await vacuum_storage(hot.backend, settings, hot_days=hot_days)
    assert res["refused_days"] == OLD_DAYS and res["events_deleted"] == 0
    assert res["archive_destination"] == dest_key(open_lake(dest_url))
    assert Counter(await hot.event_rows()) == Counter(original)
    # archive two of the three days (a narrower window), then vacuum deletes exactly those
    await run_tier(hot.backend, open_lake(dest_url), hot_days=HOT_DAYS + 1, now=END, mode=COPY)
    res = await vacuum_storage(hot.backend, settings, hot_days=hot_days)
    assert res["refused_days"] == ["2026-03-08"]
    assert res["events_deleted"] == len([r for r in original if r[1] < day_us(2) - 12 * 3600 * 1_000_000])
    # the CLI names the refused day and exits 1
    env = {
        **hot.env,
        NOW_ENV: END.isoformat(),
        "MAGSAG_STORAGE_ARCHIVE_ENABLED": "true",
        "MAGSAG_STORAGE_ARCHIVE_DESTINATION": dest_url,
    }
    await hot.backend.close()
    cli = await asyncio.to_thread(magsag, "data", "vacuum", "--hot-days", str(hot_days), env=env)
    assert cli.code == 1 and "2026-03-08" in cli.err and "archive" in cli.err
    assert len([ln for ln in cli.err.splitlines() if ln.strip()]) == 1


async def test_vacuum_guard_off_by_default(hot: HotCase, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(NOW_ENV, END.isoformat())
    settings = load_settings()
    res = await vacuum_storage(hot.backend, settings, hot_days=HOT_DAYS, dry_run=True)
    assert "refused_days" not in res and res["events_to_delete"] > 0


async def test_archive_picks_up_runs_that_ended_later(hot: HotCase, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Copy mode: the events of a run that was still running when its day was archived are
    copied once it ends (and the day counts as archived only then)."""
    from datetime import date, timedelta

    from magsag.backends.tiering.protocol import tier_source

    b = hot.backend
    start = from_us(day_us(3))  # 2026-03-07
    await b.create_run("long-run", "research-mag", started_at=start)
    for i in range(3):
        await b.append_event("long-run", "research-mag", "log", start + timedelta(hours=i), message=f"step {i}")
    dest = open_lake(str(tmp_path / "archive"))
    first = await run_tier(b, dest, hot_days=HOT_DAYS, now=END, mode=COPY)
    assert first.held_events == 3
    src = tier_source(b)
    day = date(2026, 3, 7)
    assert await src.unarchived_days([day], dest=dest_key(dest)) == []  # running: vacuum keeps it anyway
    await b.update_run("long-run", status="succeeded", ended_at=start + timedelta(hours=5))
    assert await src.unarchived_days([day], dest=dest_key(dest)) == [day]
    second = await run_tier(b, dest, hot_days=HOT_DAYS, now=END, mode=COPY)
    assert [(d.day, d.events, d.runs) for d in second.days] == [(day, 3, 1)]
    assert await src.unarchived_days([day], dest=dest_key(dest)) == []
    original = await hot.event_rows()
    assert Counter(lake_events(dest)) == Counter(old(original))
    await src.close()


@pytest.mark.parametrize("mode", [COPY, MOVE])
async def test_unwritable_destination_claims_nothing(hot: HotCase, tmp_path, mode: str) -> None:  # type: ignore[no-untyped-def]
    """A destination the job cannot write to fails before any claim: no day is held for it,
    and the next job to a good lake moves everything."""
    from magsag.backends.errors import StorageError
    from magsag.backends.tiering.protocol import tier_source

    (tmp_path / "not-a-folder").write_text("a file where the lake should be")
    bad = open_lake(str(tmp_path / "not-a-folder" / "lake"))
    original = await hot.event_rows()
    with pytest.raises(StorageError):
        await run_tier(hot.backend, bad, hot_days=HOT_DAYS, now=END, mode=mode)
    src = tier_source(hot.backend)
    try:
        assert await src.claims() == []
    finally:
        await src.close()
    assert Counter(await hot.event_rows()) == Counter(original)
    good = open_lake(str(tmp_path / "lake"))
    rep = await run_tier(hot.backend, good, hot_days=HOT_DAYS, now=END)
    assert [d.day.isoformat() for d in rep.days] == OLD_DAYS and rep.skipped == {}
