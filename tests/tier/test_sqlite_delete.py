"""The SQLite hot store's two ways to delete tiered claims: in chunks, and by rebuilding the
table (``backends/sqlite/tier_delete.py``). Both must delete exactly the claims' frozen
selections and leave a store that works as before: same schema, indexes, full-text index
in step with the rows, ``seq`` numbers never reused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.schema import US_PER_DAY, from_us
from magsag.backends.sqlite.store import SQLiteStorageBackend
from magsag.backends.sqlite.tiering import SQLiteTierSource

from tests.tier.helpers import END, day_us

pytestmark = pytest.mark.asyncio

WAYS = {"rebuild": 0.0, "chunks": 2.0}  # rebuild_fraction: 0 always rebuilds, 2 never does


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStorageBackend]:
    from magsag.ingest.demo import load_demo

    b = SQLiteStorageBackend(db_path=tmp_path / "hot.db")
    await b.initialize()
    await load_demo(b, days=4, runs_per_day=3, seed=5, end=END)
    yield b
    await b.close()


def _schema(c: Any) -> list[tuple[str, str]]:
    """Every table and index definition (a renamed table's name is quoted: the same table)."""
    rows = c.execute(
        "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'events_fts%' AND name != 'sqlite_sequence' "
        "ORDER BY name"
    ).fetchall()
    return [(name, (sql or "").replace('CREATE TABLE "events"', "CREATE TABLE events")) for name, sql in rows]


@pytest.mark.parametrize("way", sorted(WAYS))
async def test_delete_claims_takes_exactly_the_selections(store: SQLiteStorageBackend, way: str) -> None:
    b = store
    days = [from_us(day_us(i)).date() for i in (2, 1)]
    # A run still running on the first day keeps its events hot.
    await b.create_run("still-going", "mag", started_at=from_us(day_us(2)) + timedelta(hours=1))
    await b.append_event("still-going", "mag", "log", from_us(day_us(2)) + timedelta(hours=2), message="kept alive")
    src = SQLiteTierSource(b, rebuild_fraction=WAYS[way])
    claims = []
    for i, day in enumerate(days):
        c = await src.claim_day(batch_id=f"t-{way}-{i}", dest="x", day=day, mode="move", files={})
        assert c is not None
        claims.append(await src.mark_exported(c, rows={}))
    # Stored after the claims: late data for the next job, never part of these selections.
    late = await b.append_event("late-run", "sag", "log", from_us(day_us(1)) + timedelta(hours=3), message="late zebra")

    def snapshot(c: Any) -> dict[str, Any]:
        return {
            "rows": {r[0]: r for r in c.execute("SELECT event_id, ts, run_id, seq, msg FROM events")},
            "high_water": c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()[0],
            "schema": _schema(c),
        }

    before = await b.read(snapshot)
    excluded = {"still-going"}
    lo = day_us(2) // US_PER_DAY * US_PER_DAY
    hi = lo + 2 * US_PER_DAY
    seq_hi = max(cl.snapshot["seq_hi"] for cl in claims)
    gone = {
        eid
        for eid, (_, ts, run, seq, _m) in before["rows"].items()
        if lo <= ts < hi and seq <= seq_hi and run not in excluded
    }
    assert gone and late not in gone

    out = await src.delete_claims(claims, chunk_rows=7)
    await src.close()
    assert sum(d["events"] for d in out.values()) == len(gone)
    after = await b.read(snapshot)
    assert set(after["rows"]) == set(before["rows"]) - gone
    assert all(after["rows"][k] == before["rows"][k] for k in after["rows"])  # seq values kept
    assert after["schema"] == before["schema"]  # same table definition and indexes
    assert after["high_water"] >= before["high_water"]

    def checks(c: Any) -> str:
        c.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')")  # raises when out of step
        return c.execute("PRAGMA integrity_check").fetchone()[0]

    assert await b.write(checks) == "ok"
    hits = await b.search_text("zebra")
    assert [h["event_id"] for h in hits] == [late]
    assert [h["event_id"] for h in await b.search_text("alive")] == [
        k for k, r in after["rows"].items() if r[4] == "kept alive"
    ]
    new = await b.append_event("after", "mag", "log", END, message="after the delete")
    new_seq = await b.read(lambda c: c.execute("SELECT seq FROM events WHERE event_id = ?", (new,)).fetchone()[0])
    assert new_seq > before["high_water"]  # AUTOINCREMENT never reuses a number


async def test_delete_claims_is_idempotent(store: SQLiteStorageBackend) -> None:
    b = store
    src = SQLiteTierSource(b, rebuild_fraction=0.0)
    day = from_us(day_us(1)).date()
    c = await src.claim_day(batch_id="t-again", dest="x", day=day, mode="move", files={})
    assert c is not None
    c = await src.mark_exported(c, rows={})
    first = await src.delete_claims([c])
    again = await src.delete_claims([c])  # a rerun after a crash before the claim was marked done
    await src.close()
    assert first[c.batch_id]["events"] > 0
    assert again == {c.batch_id: {"events": 0, "runs": 0}}


@pytest.mark.parametrize("way", sorted(WAYS))
async def test_seq_numbers_are_never_reused(store: SQLiteStorageBackend, way: str) -> None:
    """The newest row of the store is tiered away; the next append still gets a higher ``seq``
    (claims freeze their selection by ``seq``: a reused number would join an old claim)."""
    b = store
    await b.create_run("old-run", "mag", started_at=from_us(day_us(1)), status="succeeded")
    newest = await b.append_event("old-run", "mag", "log", from_us(day_us(1)), message="the newest row")
    top = await b.read(lambda c: c.execute("SELECT max(seq) FROM events").fetchone()[0])
    src = SQLiteTierSource(b, rebuild_fraction=WAYS[way])
    c = await src.claim_day(batch_id=f"t-top-{way}", dest="x", day=from_us(day_us(1)).date(), mode="move", files={})
    assert c is not None
    await src.delete_claims([await src.mark_exported(c, rows={})])
    await src.close()
    assert (
        await b.read(lambda c: c.execute("SELECT count(*) FROM events WHERE event_id = ?", (newest,)).fetchone()[0])
        == 0
    )
    after = await b.append_event("new-run", "mag", "log", END, message="next")
    assert await b.read(lambda c: c.execute("SELECT seq FROM events WHERE event_id = ?", (after,)).fetchone()[0]) > top
