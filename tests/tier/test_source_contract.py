"""The TierSource contract: every hot store's tiering side passes this suite unchanged.

Parametrized over the hot store kinds of ``tests/tier/conftest.py`` (SQLite, PostgreSQL).
Each test drives a :class:`~magsag.backends.tiering.protocol.TierSource` directly, the way
the job does (``lakehouse/tiering/job.py``), and checks what the job relies on: the
selection a claim freezes, what the exports return, the ledger's transitions, their
refusals and idempotent repeats, copy vs move, running runs held, orphan placeholders.
The state machine itself (``backends/tiering/ledger.py``) is pinned without a store in
``test_ledger.py``; signatures in ``test_source_signature.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from magsag.backends.base import StorageBackend
from magsag.backends.errors import StorageError, ValidationError
from magsag.backends.schema import event_arrow_schema, run_arrow_schema
from magsag.backends.tiering.protocol import EVENT_SORT, RUN_SORT, Claim, TierSource, tier_source

from tests.conftest import PG_DSN
from tests.tier.helpers import HotCase

pytestmark = pytest.mark.asyncio

D1, D2, D3 = date(2026, 3, 6), date(2026, 3, 7), date(2026, 3, 8)
CUTOFF = datetime(2026, 3, 9, tzinfo=UTC)  # END's hot window of one day: D1..D3 are complete and old
FILES = {"events": "events/dt=x/part-a-0000.parquet", "runs": "runs/dt=x/part-a-0000.parquet"}
Factory = Callable[..., Awaitable[HotCase]]


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


async def add_run(
    b: StorageBackend, run_id: str, day: date, n: int, *, status: str = "succeeded", agent: str = "mag", hour: int = 1
) -> list[str]:
    """A run started on ``day`` with ``n`` events that day; terminal unless ``status="running"``."""
    start = at(day, hour)
    await b.create_run(run_id, agent, started_at=start, tags=["contract"])
    ids = [
        await b.append_event(run_id, agent, "log", start + timedelta(minutes=i), message=f"{run_id} {i}")
        for i in range(n)
    ]
    if status != "running":
        await b.update_run(run_id, status=status, ended_at=start + timedelta(hours=1))
    return ids


async def exported_ids(src: TierSource, claim: Claim, batch_rows: int = 65_536) -> list[str]:
    return [
        i
        for batch in [b async for b in src.export_events(claim, batch_rows=batch_rows)]
        for i in batch["event_id"].to_pylist()
    ]


async def hot_ids(case: HotCase) -> set[str]:
    return {r[0] for r in await case.event_rows()}


async def claim(
    src: TierSource, batch_id: str, day: date, *, mode: str = "move", dest: str = "lake", **kw: Any
) -> Claim:
    c = await src.claim_day(batch_id=batch_id, dest=dest, day=day, mode=mode, files=FILES, **kw)
    assert c is not None, f"nothing claimed on {day}"
    return c


async def settle(src: TierSource, c: Claim) -> Claim:
    """What the job does after a claim's files are committed: mark, delete (move), finish."""
    c = await src.mark_exported(c, rows={"events": c.snapshot.get("selected_events") or 0, "runs": len(c.run_ids)})
    if c.mode == "move":
        await src.delete_claims([c])
    return await src.finish_claim(c)


@pytest.fixture
async def store(hot_factory: Factory) -> HotCase:
    return await hot_factory(demo=False)


@pytest.fixture
async def src(store: HotCase) -> AsyncIterator[TierSource]:
    source = tier_source(store.backend)
    yield source
    await source.close()


# ------------------------------------------------------------ the selection


async def test_a_claim_freezes_its_selection(store: HotCase, src: TierSource) -> None:
    b = store.backend
    a = await add_run(b, "a", D2, 3)
    bb = await add_run(b, "b", D2, 2, agent="sag")
    c = await claim(src, "t-freeze", D2)
    assert c.state == "claimed" and c.day == D2 and c.files == FILES
    assert c.run_ids == ("a", "b") and c.snapshot["selected_events"] == 5
    # Stored after the claim, with timestamps of the claimed day: late data, never this claim's.
    late = await add_run(b, "late", D2, 2, hour=0)
    late.append(await b.append_event("a", "mag", "log", at(D2, 3), message="late for a terminal run"))
    assert sorted(await exported_ids(src, c)) == sorted(a + bb)
    assert [r["run_id"] for r in (await src.export_runs(c)).to_pylist()] == ["a", "b"]
    c = await settle(src, c)
    assert await hot_ids(store) == set(late)  # the delete took exactly the selection
    assert c.state == "done" and c.info["deleted"] == {"events": 5, "runs": 2}
    # The late rows are the next claim's selection (and the run that ended after the claim).
    nxt = await claim(src, "t-freeze-2", D2)
    assert sorted(await exported_ids(src, nxt)) == sorted(late) and nxt.run_ids == ("late",)


async def test_export_is_exactly_the_selection_sorted(store: HotCase, src: TierSource) -> None:
    b = store.backend
    want: list[str] = []
    for i, (agent, hour) in enumerate([("zeta", 1), ("alpha", 5), ("mid", 3), ("alpha", 2)]):
        want += await add_run(b, f"r{i}", D2, 4, agent=agent, hour=hour)
    await add_run(b, "before", D1, 2)  # other days: never part of D2's claim
    await add_run(b, "after", D3, 2)
    await add_run(b, "open", D2, 3, status="running")  # held: its run is still running
    await b.append_event("r0", "zeta", "log", at(D2, 23, 59), message="last minute of the day")
    c = await claim(src, "t-sorted", D2)
    batches = [x async for x in src.export_events(c, batch_rows=3)]
    assert batches and all(x.num_rows <= 3 and x.schema.equals(event_arrow_schema()) for x in batches)
    table = pa.Table.from_batches(batches)
    assert table.num_rows == len(want) + 1 == c.snapshot["selected_events"]
    keys = list(zip(*(table.column(k).to_pylist() for k in EVENT_SORT), strict=True))
    assert keys == sorted(keys) and len(set(table["event_id"].to_pylist())) == table.num_rows
    assert set(want) <= set(table["event_id"].to_pylist())
    runs = await src.export_runs(c)
    assert runs.schema.equals(run_arrow_schema())
    assert sorted(runs["run_id"].to_pylist()) == ["r0", "r1", "r2", "r3"]
    run_keys = list(zip(*(runs.column(k).to_pylist() for k in RUN_SORT), strict=True))
    assert run_keys == sorted(run_keys)
    assert await exported_ids(src, c) == table["event_id"].to_pylist()  # read-only: again the same


# ---------------------------------------------------------- the transitions


async def test_every_transition_is_guarded(store: HotCase, src: TierSource) -> None:
    await add_run(store.backend, "a", D2, 3)
    claimed = await claim(src, "t-guards", D2)
    with pytest.raises(StorageError, match="claimed: not exported"):
        await src.delete_claimed(claimed)
    with pytest.raises(StorageError, match="claimed: not exported yet; not finished"):
        await src.finish_claim(claimed)
    # A forged copy cannot talk the store into deleting: the ledger's own state counts.
    with pytest.raises(StorageError, match="not exported"):
        await src.delete_claims([claimed.with_changes(state="exported")])
    # mark_exported needs a count for exactly the planned files.
    with pytest.raises(StorageError, match="no row count for planned runs"):
        await src.mark_exported(claimed, rows={"events": 3})
    with pytest.raises(StorageError, match="x not planned"):
        await src.mark_exported(claimed, rows={"events": 3, "runs": 1, "x": 0})
    with pytest.raises(ValidationError, match="whole number"):
        await src.mark_exported(claimed, rows={"events": -1, "runs": 1})
    with pytest.raises(ValidationError, match="belongs to the ledger"):
        await src.update_info(claimed, {"deleted": {"events": 3}})
    assert [c.state for c in await src.claims()] == ["claimed"]

    exported = await src.mark_exported(claimed, rows={"events": 3, "runs": 1}, info={"note": 1})
    assert (exported.state, exported.event_rows, exported.run_rows, exported.info["note"]) == ("exported", 3, 1, 1)
    with pytest.raises(StorageError, match="exported with 3 events and 1 runs, not 2 and 1"):
        await src.mark_exported(claimed, rows={"events": 2, "runs": 1})
    with pytest.raises(StorageError, match="not deleted yet; not finished"):
        await src.finish_claim(exported)  # a move finishes only after its delete
    assert await src.delete_claimed(exported) == {"events": 3, "runs": 1}
    done = await src.finish_claim(exported, info={"result": "ok"})
    assert done.state == "done" and done.finished_at is not None and done.info["result"] == "ok"
    assert done.info["deleted"] == {"events": 3, "runs": 1} and done.info["note"] == 1


async def test_a_done_claim_stays_done(store: HotCase, src: TierSource) -> None:
    """Repeats of mark/finish with a stale copy of the claim change nothing (SQLite's
    mark_exported used to move a done claim back to exported)."""
    await add_run(store.backend, "a", D2, 3)
    claimed = await claim(src, "t-stale", D2, mode="copy")
    done = await settle(src, claimed)
    again = await src.mark_exported(claimed, rows={"events": 3, "runs": 1})  # the caller's copy says "claimed"
    assert again.state == "done" and again.finished_at == done.finished_at
    assert [c.state for c in await src.claims()] == ["done"] and await src.unfinished_claims() == []


async def test_finished_at_is_written_once(store: HotCase, src: TierSource) -> None:
    """SQLite's finish_claim used to overwrite finished_at on a repeat."""
    await add_run(store.backend, "a", D2, 3)
    c = await src.mark_exported(await claim(src, "t-once", D2, mode="copy"), rows={"events": 3, "runs": 1})
    first_at, later = datetime(2026, 3, 10, 1, tzinfo=UTC), datetime(2026, 3, 10, 5, tzinfo=UTC)
    src.ledger.clock = lambda: first_at  # type: ignore[attr-defined]
    first = await src.finish_claim(c, info={"result": 1})
    src.ledger.clock = lambda: later  # type: ignore[attr-defined]
    again = await src.finish_claim(c, info={"result": 2})
    assert first.finished_at == again.finished_at == first_at
    (stored,) = await src.claims()
    assert stored.finished_at == first_at and stored.info["result"] == 1


@pytest.mark.parametrize("bad", ["", "a b", "x" * 81, "../up", "it's", 123, None])
async def test_invalid_batch_ids_are_refused(store: HotCase, src: TierSource, bad: Any) -> None:
    """One check of batch ids for every store (SQLite's raised TypeError for a non-string)."""
    await add_run(store.backend, "a", D2, 1)
    with pytest.raises(ValidationError, match="invalid tier batch id"):
        await src.claim_day(batch_id=bad, dest="lake", day=D2, mode="move", files={})
    assert await src.claims() == []


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"mode": "shuffle"}, "tier mode"),
        ({"files": {"parquet": "x"}}, "planned tier files"),
        ({"info": {"deleted": 1}}, "belongs to the ledger"),
    ],
)
async def test_invalid_claims_record_nothing(store: HotCase, src: TierSource, kw: dict[str, Any], needle: str) -> None:
    await add_run(store.backend, "a", D2, 1)
    args: dict[str, Any] = {"batch_id": "t-bad", "dest": "lake", "day": D2, "mode": "move", "files": {}, **kw}
    with pytest.raises(ValidationError, match=needle):
        await src.claim_day(**args)
    with pytest.raises(ValidationError, match="tier mode"):
        await src.tierable_days(CUTOFF, dest="lake", mode="shuffle")
    assert await src.claims() == []


async def test_repeats_are_idempotent(store: HotCase, src: TierSource) -> None:
    b = store.backend
    await add_run(b, "a", D2, 4)
    c = await claim(src, "t-again", D2)
    # One unfinished claim per day, whatever the destination.
    assert await src.claim_day(batch_id="t-other", dest="lake", day=D2, mode="move", files=FILES) is None
    assert await src.claim_day(batch_id="t-else", dest="elsewhere", day=D2, mode="copy", files=FILES) is None
    c = await src.mark_exported(c, rows={"events": 4, "runs": 1})
    assert await src.mark_exported(c, rows={"events": 4, "runs": 1}) == c
    first = await src.delete_claims([c], chunk_rows=3)
    again = await src.delete_claims([c], chunk_rows=3)  # a rerun after a kill before the finish
    assert first == {c.batch_id: {"events": 4, "runs": 1}} and again == {c.batch_id: {"events": 0, "runs": 0}}
    done = await src.finish_claim(c)
    assert done.info["deleted"] == {"events": 4, "runs": 1}
    assert await src.delete_claimed(done) == {"events": 0, "runs": 0}  # done: allowed, deletes nothing
    assert (await src.claims())[0].info["deleted"] == {"events": 4, "runs": 1}
    assert await src.claim_day(batch_id="t-empty", dest="lake", day=D2, mode="move", files=FILES) is None
    assert [x.batch_id for x in await src.claims()] == ["t-again"]  # an empty selection records nothing


# --------------------------------------------------------- after a kill


def reopen(case: HotCase) -> StorageBackend:
    """A second handle on the same store, as the next job's process opens it."""
    from magsag.backends.postgres.store import PostgresStorageBackend
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    b: Any = case.backend
    if case.kind == "sqlite":
        return SQLiteStorageBackend(db_path=b.db_path)
    return PostgresStorageBackend(PG_DSN, schema=b.schema)


def ticking(src: TierSource) -> None:
    """A pinned ledger clock that moves one second per reading: claims made one after the
    other get increasing ``created_at`` without the wall clock."""
    times = iter(datetime(2026, 3, 10, tzinfo=UTC) + timedelta(seconds=i) for i in range(1000))
    src.ledger.clock = lambda: next(times)  # type: ignore[attr-defined]


async def test_unfinished_claims_after_a_kill(store: HotCase) -> None:
    b = store.backend
    first, second = await add_run(b, "a", D1, 2), await add_run(b, "b", D2, 3)
    dead = tier_source(b)
    ticking(dead)
    await dead.mark_exported(await claim(dead, "t-kill-1", D1), rows={"events": 2, "runs": 1})
    await claim(dead, "t-kill-2", D2, dest="archive", mode="copy")
    await b.close()  # the job's process dies here: no finish, no close of its source

    b2 = reopen(store)
    await b2.initialize()
    src = tier_source(b2)
    try:
        left = await src.unfinished_claims()
        assert [(c.batch_id, c.state) for c in left] == [("t-kill-1", "exported"), ("t-kill-2", "claimed")]
        assert [c.batch_id for c in await src.unfinished_claims("archive")] == ["t-kill-2"]
        assert await src.unfinished_claims("nowhere") == []
        # The next job finishes each from where it stopped.
        assert sorted(await exported_ids(src, left[1])) == sorted(second)
        await src.delete_claims([left[0]])
        await src.finish_claim(left[0])
        await settle(src, left[1])
        assert await src.unfinished_claims() == []
        # The move took its rows, the copy left its own.
        assert {r[0] for r in await event_ids(store, b2)} == set(second) and not set(first) & set(second)
    finally:
        await src.close()
        await b2.close()


async def event_ids(case: HotCase, b: StorageBackend) -> list[tuple[Any, ...]]:
    if case.kind == "sqlite":
        return await b.read(lambda c: c.execute("SELECT event_id FROM events").fetchall())  # type: ignore[attr-defined]
    schema = b.schema  # type: ignore[attr-defined]
    return [tuple(r) for r in await b.read(lambda c: c.fetch(f"SELECT event_id FROM {schema}.events"))]  # type: ignore[attr-defined]


# ------------------------------------------------------------ copy vs move


async def test_copy_leaves_rows_and_never_copies_them_twice(store: HotCase, src: TierSource) -> None:
    b = store.backend
    ids = await add_run(b, "a", D2, 4)
    c = await claim(src, "t-copy", D2, mode="copy", dest="archive")
    with pytest.raises(StorageError, match="is a copy"):
        await src.delete_claims([await src.mark_exported(c, rows={"events": 4, "runs": 1})])
    done = await src.finish_claim(c)  # a copy finishes without a delete
    assert done.state == "done" and await hot_ids(store) == set(ids)

    def counts(days: list[Any]) -> dict[date, tuple[int, int]]:
        return {d.day: (d.events, d.runs) for d in days}

    # What a claim would select now depends on the mode: copy skips what "archive" holds.
    assert counts(await src.tierable_days(CUTOFF, dest="archive", mode="copy")) == {D2: (0, 0)}
    assert counts(await src.tierable_days(CUTOFF, dest="archive", mode="move")) == {D2: (4, 1)}
    assert counts(await src.tierable_days(CUTOFF, dest="other", mode="copy")) == {D2: (4, 1)}
    assert await src.claim_day(batch_id="t-copy-2", dest="archive", day=D2, mode="copy", files=FILES) is None
    assert await src.unarchived_days([D2], dest="archive") == []
    assert await src.unarchived_days([D2], dest="other") == [D2]

    late = await add_run(b, "late", D2, 2, hour=9)  # late data of an archived day
    assert counts(await src.tierable_days(CUTOFF, dest="archive", mode="copy")) == {D2: (2, 1)}
    assert await src.unarchived_days([D2], dest="archive") == [D2]
    c2 = await claim(src, "t-copy-3", D2, mode="copy", dest="archive")
    assert c2.snapshot["covered_by"] == ["t-copy"] and c2.run_ids == ("late",)
    assert sorted(await exported_ids(src, c2)) == sorted(late)
    await settle(src, c2)
    assert await src.unarchived_days([D2], dest="archive") == [] and await hot_ids(store) == set(ids + late)

    # A move to the same place takes everything of the day: copies never hold back a move.
    m = await claim(src, "t-move", D2, dest="archive")
    assert sorted(await exported_ids(src, m)) == sorted(ids + late) and m.run_ids == ("a", "late")
    await settle(src, m)
    assert await hot_ids(store) == set()


# ------------------------------------------------------- running and orphan runs


async def test_running_runs_stay_hot_until_they_end(store: HotCase, src: TierSource) -> None:
    b = store.backend
    done = await add_run(b, "done", D2, 2)
    long = await add_run(b, "long", D2, 3, status="running")
    (day,) = await src.tierable_days(CUTOFF, dest="lake")
    assert (day.day, day.events, day.runs, day.held_events, day.held_runs) == (D2, 2, 1, 3, 1)
    running = await src.running_runs(CUTOFF)
    assert [(r.run_id, r.placeholder) for r in running] == [("long", False)]
    c = await claim(src, "t-held", D2)
    assert c.run_ids == ("done",) and sorted(await exported_ids(src, c)) == sorted(done)
    assert "long" not in (await src.export_runs(c))["run_id"].to_pylist()
    await settle(src, c)
    assert await hot_ids(store) == set(long)
    assert await src.unarchived_days([D2], dest="lake") == []  # running: vacuum keeps it anyway
    await b.update_run("long", status="failed", ended_at=at(D3, 1))
    assert await src.unarchived_days([D2], dest="lake") == [D2]
    nxt = await claim(src, "t-held-2", D2)
    assert nxt.run_ids == ("long",) and sorted(await exported_ids(src, nxt)) == sorted(long)
    await settle(src, nxt)
    assert await hot_ids(store) == set() and await b.get_run("long") is None


async def test_orphan_placeholders_move_with_their_events(store: HotCase, src: TierSource) -> None:
    b = store.backend
    await add_run(b, "real", D2, 1)
    ghost = [await b.append_event("ghost", "sag", "log", at(D2, 4, i), message="late event") for i in range(2)]
    placeholder = await b.get_run("ghost")
    assert placeholder is not None and placeholder["status"] == "running"
    assert [(r.run_id, r.placeholder) for r in await src.running_runs(CUTOFF)] == [("ghost", True)]
    (held,) = await src.tierable_days(CUTOFF, dest="lake")
    (free,) = await src.tierable_days(CUTOFF, dest="lake", orphan_runs=["ghost"])
    assert (held.events, held.held_events) == (1, 2) and (free.events, free.held_events) == (3, 0)
    c = await claim(src, "t-orphan", D2, orphan_runs=["ghost", "ghost"])
    assert c.orphan_runs == ("ghost",) and c.run_ids == ("real",)
    assert set(ghost) <= set(await exported_ids(src, c))
    assert (await src.export_runs(c))["run_id"].to_pylist() == ["real"]  # the placeholder is never exported
    out = await src.delete_claims([await src.mark_exported(c, rows={"events": 3, "runs": 1})])
    assert out[c.batch_id] == {"events": 3, "runs": 2}  # the run and the placeholder no event refers to
    assert await b.get_run("ghost") is None and await hot_ids(store) == set()


async def test_claims_are_listed_oldest_first(store: HotCase, src: TierSource) -> None:
    ticking(src)
    for day in (D1, D2, D3):
        await add_run(store.backend, f"r-{day:%d}", day, 1)
    await claim(src, "t-list-b", D2, dest="b")
    await claim(src, "t-list-a", D1, dest="a")
    await claim(src, "t-list-c", D3, dest="a")
    assert [c.batch_id for c in await src.claims()] == ["t-list-b", "t-list-a", "t-list-c"]
    assert [c.batch_id for c in await src.claims("a")] == ["t-list-a", "t-list-c"]
    assert [c.batch_id for c in await src.claims(day=D3)] == ["t-list-c"]
    assert [c.batch_id for c in await src.claims("a", D2)] == []
