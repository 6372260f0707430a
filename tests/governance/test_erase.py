"""Erase everywhere: after ``delete_runs`` the text is found by no search, in any tier.

Every hot store kind (``hot``: SQLite, PostgreSQL) x every lake kind (``lake_case``:
local folder, S3 on SeaweedFS), with an archive destination recorded in the claim
ledger. The searches: the store's word search (hot + lake), SQL ``LIKE`` over every
DuckDB view, every Parquet file under the lake and archive roots (decoded values and raw
bytes: footers keep min/max statistics uncompressed), and for SQLite the bytes of the
database file, its WAL and journals after the checkpoint.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from magsag.backends.errors import NotFoundError
from magsag.backends.schema import Event, from_us
from magsag.backends.tiering.protocol import COPY, MOVE
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.objstore import Lake, open_lake
from magsag.lakehouse.settings import load_settings
from magsag.lakehouse.tiered_backend import TieredBackend
from magsag.lakehouse.tiering.job import run_tier

from magsag.storage import delete_runs
from tests.lake_fixtures import LakeCase
from tests.tier.helpers import END, HOT_DAYS, HotCase, day_us, lake_events, lake_runs

pytestmark = pytest.mark.asyncio

SECRET = "sk-live-9f8e7d6c5b4a"
SECRET_WORD = "9f8e7d6c5b4a"
RUN_TEXT = "confidentialxq77 customer record"  # only in the erased run tree
PARENT, CHILD, GRANDCHILD, BYSTANDER = "mag-erase0001", "sag-erase0002", "sag-erase0003", "mag-keep0004"


async def seed(backend: Any) -> None:
    """A run tree on an old day (tiered) and one on the hot day, plus a leaked secret in a bystander."""
    for day, suffix in ((2, ""), (0, "h")):
        t = from_us(day_us(day))
        p, c, g = PARENT + suffix, CHILD + suffix, GRANDCHILD + suffix
        await backend.create_run(p, "erase-mag", started_at=t)
        await backend.create_run(c, "erase-sag", parent_run_id=p, started_at=t)
        await backend.create_run(g, "erase-sag", parent_run_id=c, started_at=t)
        evs = [
            Event.create(run, agent, "log", t, message=f"{RUN_TEXT} {run}", payload={"note": RUN_TEXT})
            for run, agent in ((p, "erase-mag"), (c, "erase-sag"), (g, "erase-sag"))
        ]
        await backend.append_events(evs)
        for run in (p, c, g):
            await backend.update_run(run, status="succeeded", ended_at=from_us(day_us(day) + 1000))
        await backend.create_run(BYSTANDER + suffix, "keep-mag", started_at=t)
        await backend.append_events(
            [
                Event.create(BYSTANDER + suffix, "keep-mag", "log", t, message=f"oops {SECRET} pasted"),
                Event.create(BYSTANDER + suffix, "keep-mag", "mcp.call", t, payload={"args": {"key": SECRET}}),
                Event.create(BYSTANDER + suffix, "keep-mag", "log", t, message="harmless neighbour line"),
            ]
        )
        await backend.update_run(BYSTANDER + suffix, status="succeeded", ended_at=from_us(day_us(day) + 1000))


def parquet_files(lake: Lake) -> list[str]:
    if not lake.is_local:
        lake.fs.invalidate_cache()
    return sorted(p for p in lake.fs.find(lake.root) if p.endswith(".parquet"))


def lake_texts(lake: Lake) -> tuple[str, bytes]:
    """Every string value of every Parquet file under the root, and all their raw bytes."""
    values: list[str] = []
    raw = b""
    for p in parquet_files(lake):
        data = lake.fs.cat_file(p)
        raw += data
        import pyarrow as pa

        t = pq.read_table(pa.BufferReader(data))
        for col in t.columns:
            if pa.types.is_string(col.type):
                values += [v for v in col.to_pylist() if v]
    return "\n".join(values), raw


def assert_lake_clean(lake: Lake, forbidden: list[str]) -> None:
    text, raw = lake_texts(lake)
    for f in forbidden:
        assert f not in text
        assert f.encode() not in raw
    # every data file is a live, committed one: nothing old left for a plain glob to find
    live = {e.path for ds in layout.DATASETS for e in manifest.live_entries(lake, ds)}
    found = {p[len(lake.root) :].lstrip("/") for p in parquet_files(lake)}
    assert found == live


async def hot_text(hot: HotCase) -> str:
    return "\n".join(repr(r) for r in await hot.event_rows() + await hot.run_rows())


def sqlite_bytes(db: Path) -> bytes:
    out = b""
    for p in [db, Path(f"{db}-wal"), *db.parent.glob(f"{db.name}.magsag-journal/*")]:
        if p.is_file():
            out += p.read_bytes()
    return out


async def test_erase_everywhere(hot: HotCase, lake_case: LakeCase, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MAGSAG_NOW", END.isoformat())
    b = hot.backend
    await seed(b)
    archive = open_lake(str(tmp_path / "archive"))
    await run_tier(b, archive, hot_days=HOT_DAYS, now=END, mode=COPY, job_prefix="archive")
    await run_tier(b, lake_case.lake, hot_days=HOT_DAYS, now=END, mode=MOVE)
    lake_case.apply(monkeypatch)
    for k, v in hot.env.items():
        monkeypatch.setenv(k, v)
    settings = load_settings()
    before_events = Counter(lake_events(lake_case.lake)) + Counter(await hot.event_rows())
    assert RUN_TEXT in await hot_text(hot) + str(lake_events(lake_case.lake))

    # dry run: counts per tier, nothing written
    dry = await delete_runs(b, settings, [PARENT, PARENT + "h"], dry_run=True)
    assert dry["selected_runs"] == 6
    assert dry["hot"] == {"events": 3, "runs": 3}
    lake_row, archive_row = dry["lakes"]
    assert (lake_row["role"], lake_row["events"], lake_row["runs"]) == ("lake", 3, 3)
    assert (archive_row["role"], archive_row["events"], archive_row["runs"]) == ("archive", 3, 3)
    assert Counter(lake_events(lake_case.lake)) + Counter(await hot.event_rows()) == before_events

    # erase the run trees (children followed through both tiers) and the leaked secret
    rep = await delete_runs(b, settings, [PARENT, PARENT + "h"])
    assert sorted(rep["run_ids"]) == sorted(r + s for r in (PARENT, CHILD, GRANDCHILD) for s in ("", "h"))
    sec = await delete_runs(b, settings, matching=SECRET)
    assert sec["selected_events"] == 4 and sec["selected_runs"] == 0

    forbidden = [SECRET, SECRET_WORD, "confidentialxq77"]
    for f in forbidden:
        assert f not in await hot_text(hot)
    assert_lake_clean(lake_case.lake, forbidden)
    assert_lake_clean(archive, forbidden)
    # the bystanders' other rows are all still there
    kept = [r for r in lake_events(lake_case.lake) + await hot.event_rows() if r[2].startswith(BYSTANDER)]
    assert sorted(r[6] for r in kept) == ["harmless neighbour line"] * 2
    assert {r[0] for r in lake_runs(lake_case.lake)} >= {BYSTANDER}
    gone_runs = {r + s for r in (PARENT, CHILD, GRANDCHILD) for s in ("", "h")}
    assert not gone_runs & {r[0] for r in lake_runs(lake_case.lake) + lake_runs(archive) + await hot.run_rows()}

    # word search over hot + lake, SQL LIKE over every view
    tiered = TieredBackend(b, lake_url=lake_case.url, settings=settings)
    for word in (SECRET_WORD, "confidentialxq77"):
        assert await tiered.search_text(word) == []
    from magsag.lakehouse.query import close, connect

    con = connect(settings)
    try:
        for view in ("events", "lake_events", "hot_events"):
            n = con.execute(
                f"SELECT count(*) FROM {view} WHERE msg LIKE '%9f8e7d6c%' "
                "OR CAST(payload AS VARCHAR) LIKE '%9f8e7d6c%' OR msg LIKE '%confidentialxq77%'"
            ).fetchone()[0]
            assert n == 0, view
        assert con.execute(f"SELECT count(*) FROM runs WHERE run_id LIKE '{PARENT}%'").fetchone()[0] == 0
    finally:
        close(con)

    if hot.kind == "sqlite":
        raw = sqlite_bytes(b.db_path)
        for f in forbidden:
            assert f.encode() not in raw

    # tombstones: late copies of erased rows are refused silently; tiering brings nothing back
    t = from_us(day_us(2))
    await b.append_events([Event.create(CHILD, "erase-sag", "log", t, message=f"{RUN_TEXT} late copy")])
    await b.append_event(PARENT + "h", "erase-mag", "log", from_us(day_us(0)), message=RUN_TEXT)
    with pytest.raises(NotFoundError, match="erased"):
        await b.create_run(GRANDCHILD, "erase-sag", started_at=t)
    assert "confidentialxq77" not in await hot_text(hot)
    await run_tier(b, lake_case.lake, hot_days=HOT_DAYS, now=END, mode=MOVE)
    assert_lake_clean(lake_case.lake, forbidden)
    again = await delete_runs(b, settings, resume_only=True)
    assert again["resumed"] == [] and again["job_ids"] == []
