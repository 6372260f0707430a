"""Tiering on the PostgreSQL hot store: what only PostgreSQL has.

Whole-partition drops versus chunked DELETEs, the frozen selection against writers whose
transactions commit after a claim began (including a row numbered before the bound),
the session advisory lock (released by kill -9, refused with the holder's name, lost
when its session ends), the ledger migration, and kill -9 at every step of a job.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from magsag.backends.errors import LockedError
from magsag.backends.schema import Event
from magsag.backends.tiering.protocol import COPY, tier_source
from magsag.lakehouse.faults import FAULT_ENV, FAULT_EXIT_CODE
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.tiering.destination import dest_key
from magsag.lakehouse.tiering.job import run_tier
from magsag.lakehouse.tiering.report import TierProgress

from tests.clock import PINNED_TODAY
from tests.conftest import PG_DSN, make_postgres

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
TODAY = PINNED_TODAY
DAY_A, DAY_B = TODAY - timedelta(days=10), TODAY - timedelta(days=9)


def at(d: date, hour: int = 12, second: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC) + timedelta(seconds=second)


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Any]:
    backend, _env, cleanup = make_postgres(tmp_path)
    await backend.initialize()
    try:
        yield backend
    finally:
        await backend.close()
        if cleanup is not None:
            await cleanup()


@pytest.fixture
async def admin() -> AsyncIterator[Any]:
    """A plain connection (timestamps as integer microseconds, like the backend's)."""
    import asyncpg
    from magsag.backends.postgres.conn import init_connection

    conn = await asyncpg.connect(PG_DSN)
    await init_connection(conn)
    yield conn
    await conn.close()


async def add_run(b: Any, run_id: str, day: date, n: int, *, status: str = "succeeded", hour: int = 2) -> list[str]:
    await b.create_run(run_id, "planner", started_at=at(day, 1))
    events = [
        Event.create(run_id, "planner", "log", at(day, hour, i), message=f"{run_id} step {i}", payload={"i": i})
        for i in range(n)
    ]
    await b.append_events(events)
    if status != "running":
        await b.update_run(run_id, status=status, ended_at=at(day, 3))
    return [e.event_id for e in events]


def insert_sql(schema: str) -> str:
    return (
        f"INSERT INTO {schema}.events (event_id, ts, run_id, agent_slug, type, level, msg, payload) "
        "VALUES ($1, $2, $3, 'planner', 'log', 'info', 'late', '{}')"
    )


def lake_events(root: Path) -> Counter[str]:
    """Every event id in the lake's Parquet files, read by plain glob (no manifest)."""
    out: Counter[str] = Counter()
    for f in sorted(root.glob("events/dt=*/*.parquet")):
        out.update(pq.read_table(f, columns=["event_id"]).column("event_id").to_pylist())
    return out


async def hot_events(admin: Any, schema: str) -> Counter[str]:
    return Counter(r[0] for r in await admin.fetch(f"SELECT event_id FROM {schema}.events"))


async def partitions(admin: Any, schema: str) -> set[str]:
    rows = await admin.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
        f"{schema}.events",
    )
    return {r[0] for r in rows}


def part(d: date) -> str:
    return "events_" + d.strftime("%Y%m%d")


# ----------------------------------------------------------------- deletes


async def test_a_whole_day_drops_its_partition_and_a_partial_day_is_deleted(pg, admin, tmp_path) -> None:
    s = pg.schema
    a = await add_run(pg, "a-1", DAY_A, 30) + await add_run(pg, "a-2", DAY_A, 10, status="failed")
    b_done = await add_run(pg, "b-1", DAY_B, 20)
    b_running = await add_run(pg, "b-2", DAY_B, 5, status="running")
    assert {part(DAY_A), part(DAY_B)} <= await partitions(admin, s)

    report = await run_tier(pg, open_lake(str(tmp_path / "lake")), hot_days=3)

    assert report.events == 60 and report.runs == 3
    names = await partitions(admin, s)
    assert part(DAY_A) not in names  # the whole day: DROP TABLE, no dead rows
    assert part(DAY_B) in names  # a running run keeps rows there: DELETE of the others
    assert await hot_events(admin, s) == Counter(b_running)
    assert lake_events(tmp_path / "lake") == Counter(a + b_done)
    by_day = {d.day: d for d in report.days}
    assert by_day[DAY_A].deleted_events == 40 and by_day[DAY_B].deleted_events == 20
    runs = {r[0] for r in await admin.fetch(f"SELECT run_id FROM {s}.runs")}
    assert runs == {"b-2"}
    # A late event of a tiered run recreates the dropped partition (and a placeholder run,
    # an orphan since the lake has the run): the next job tiers it as a new file.
    late = Event.create("a-1", "planner", "log", at(DAY_A, 5), message="late")
    await pg.append_events([late])
    assert part(DAY_A) in await partitions(admin, s)
    again = await run_tier(pg, open_lake(str(tmp_path / "lake")), hot_days=3)
    assert again.events == 1 and again.orphan_runs == ["a-1"]
    assert {r[0] for r in await admin.fetch(f"SELECT run_id FROM {s}.runs")} == {"b-2"}
    assert lake_events(tmp_path / "lake") == Counter([*a, *b_done, late.event_id])


async def test_the_drop_falls_back_to_chunks_when_the_table_stays_locked(pg, admin, tmp_path) -> None:
    s = pg.schema
    ids = await add_run(pg, "a-1", DAY_A, 25)
    src = tier_source(pg)
    src.drop_lock_timeout_ms = 100
    claim = await src.claim_day(batch_id="t-lock-a", dest="x", day=DAY_A, mode="move", files={})
    claim = await src.mark_exported(claim, rows={})
    async with admin.transaction():
        await admin.execute(f"LOCK TABLE {s}.{part(DAY_A)} IN ACCESS SHARE MODE")  # a long reader of that day
        chunks: list[int] = []
        done = await src.delete_claimed(claim, chunk_rows=10, on_chunk=chunks.append)
    assert done == {"events": 25, "runs": 1}
    assert chunks == [10, 10, 5]
    assert part(DAY_A) in await partitions(admin, s)
    assert not await hot_events(admin, s)
    assert len(ids) == 25


# ------------------------------------------------------------ frozen selection


def _sync_insert(schema: str, rows: list[tuple[Any, ...]]) -> None:
    """Commit rows from another connection, on its own loop (called from a sync progress hook)."""
    import asyncpg
    from magsag.backends.postgres.conn import init_connection

    async def go() -> None:
        conn = await asyncpg.connect(PG_DSN)
        await init_connection(conn)
        try:
            await conn.executemany(insert_sql(schema), rows)
        finally:
            await conn.close()

    t = threading.Thread(target=lambda: asyncio.run(go()))
    t.start()
    t.join()


class InsertDuringExport(TierProgress):
    """Commits a late event of the day being exported, between its claim and its delete."""

    def __init__(self, schema: str, event: Event):
        self.schema, self.event, self.fired = schema, event, False

    def day(self, day: date, step: str) -> None:
        if step == "export events" and not self.fired:
            self.fired = True
            e = self.event
            _sync_insert(self.schema, [(e.event_id, e.ts_us, e.run_id)])


async def test_a_writer_committing_after_the_claim_began_is_never_lost(pg, admin, tmp_path) -> None:
    s = pg.schema
    before = await add_run(pg, "r-1", DAY_A, 10)
    pending = Event.create("r-1", "planner", "log", at(DAY_A, 6), message="in flight")
    late = Event.create("r-1", "planner", "log", at(DAY_A, 7), message="after the claim")
    lake_root = tmp_path / "lake"

    tx = admin.transaction()
    await tx.start()
    await admin.execute(insert_sql(s), pending.event_id, pending.ts_us, pending.run_id)
    job = asyncio.create_task(run_tier(pg, open_lake(str(lake_root)), hot_days=3, progress=InsertDuringExport(s, late)))
    await asyncio.sleep(1.0)
    assert not job.done()  # the claim waits for the open writer
    assert not await pg.read(lambda c: c.fetchval(f"SELECT count(*) FROM {s}.tier_batches"))
    await tx.commit()
    first = await asyncio.wait_for(job, 60)

    assert first.events == 11  # the in-flight row joined; the late one did not
    assert lake_events(lake_root) == Counter([*before, pending.event_id])
    assert await hot_events(admin, s) == Counter([late.event_id])  # chunked delete left it
    assert part(DAY_A) in await partitions(admin, s)

    second = await run_tier(pg, open_lake(str(lake_root)), hot_days=3)
    assert second.events == 1
    assert lake_events(lake_root) == Counter([*before, pending.event_id, late.event_id])
    assert len(list((lake_root / f"events/dt={DAY_A.isoformat()}").glob("*.parquet"))) == 2
    assert not await hot_events(admin, s)


async def test_a_row_numbered_before_the_bound_but_routed_after_it_is_waited_for(pg, admin, tmp_path) -> None:
    """The case a lock on the day's partition alone would miss: the ``seq`` default is
    evaluated before tuple routing locks the partition. A slow default widens the gap."""
    s = pg.schema
    before = await add_run(pg, "r-1", DAY_A, 5)
    await admin.execute(
        f"CREATE FUNCTION {s}.slow_seq() RETURNS bigint LANGUAGE plpgsql AS $$ DECLARE n bigint; "
        f"BEGIN n := nextval('{s}.events_seq'); PERFORM pg_sleep(2); RETURN n; END $$"
    )
    await admin.execute(f"ALTER TABLE {s}.events ALTER COLUMN seq SET DEFAULT {s}.slow_seq()")
    slow = Event.create("r-1", "planner", "log", at(DAY_A, 9), message="numbered, not yet routed")

    import asyncpg
    from magsag.backends.postgres.conn import init_connection

    writer = await asyncpg.connect(PG_DSN)
    await init_connection(writer)
    try:
        pid = writer.get_server_pid()
        insert = asyncio.create_task(writer.execute(insert_sql(s), slow.event_id, slow.ts_us, slow.run_id))
        await asyncio.sleep(0.7)
        held = {
            r[0]
            for r in await admin.fetch(
                "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE l.pid = $1 AND l.granted",
                pid,
            )
        }
        assert "events" in held and part(DAY_A) not in held  # numbered, partition not locked yet
        report = await run_tier(pg, open_lake(str(tmp_path / "lake")), hot_days=3, mode=COPY)
        assert insert.done()
        await insert
    finally:
        await writer.close()
    claim = (await tier_source(pg).claims(day=DAY_A))[0]
    seq = await admin.fetchval(f"SELECT seq FROM {s}.events WHERE event_id = $1", slow.event_id)
    assert seq < claim.snapshot["seq_hi"]
    assert report.events == 6
    assert lake_events(tmp_path / "lake") == Counter([*before, slow.event_id])


async def test_a_claim_gives_up_on_a_writer_that_never_ends_and_records_nothing(pg, admin) -> None:
    from magsag.backends.postgres.tiering import PostgresTierSource

    s = pg.schema
    await add_run(pg, "r-1", DAY_A, 3)
    src = PostgresTierSource(pg, freeze_timeout=0.5)
    other = Event.create("r-2", "planner", "log", at(TODAY, 0), message="open transaction today")
    async with admin.transaction():
        await admin.execute(insert_sql(s), other.event_id, other.ts_us, other.run_id)
        with pytest.raises(LockedError, match=r"stayed open for more than 0.5s \(pids \d+\)"):
            await src.claim_day(batch_id="t-frozen", dest="x", day=DAY_A, mode="move", files={})
        assert await src.claims() == []
    claim = await src.claim_day(batch_id="t-frozen", dest="x", day=DAY_A, mode="move", files={})
    assert claim is not None and claim.snapshot["selected_events"] == 3


# ------------------------------------------------------------------- locks

_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from magsag.backends.postgres.store import PostgresStorageBackend
    from magsag.backends.tiering.protocol import tier_source

    async def main():
        b = PostgresStorageBackend(sys.argv[1], schema=sys.argv[2])
        await b.initialize()
        async with tier_source(b).job_lock(wait=False):
            print("locked", flush=True)
            await asyncio.sleep(600)

    asyncio.run(main())
    """
)


async def test_the_advisory_lock_names_its_holder_and_dies_with_its_process(pg) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, PG_DSN, pg.schema],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
        assert line.strip() == "locked"
        src = tier_source(pg)
        with pytest.raises(LockedError, match=rf"held by magsag-tier pid={proc.pid} host="):
            async with src.job_lock(wait=False):
                pass
        with pytest.raises(LockedError):
            async with src.job_lock(wait=True, timeout=0.3):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        async with src.job_lock(wait=True, timeout=20):
            claim_free = True
        assert claim_free
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def test_two_sources_of_one_store_exclude_each_other(pg) -> None:
    first, second = tier_source(pg), tier_source(pg)
    async with first.job_lock(wait=False):
        with pytest.raises(LockedError, match=f"pid={os.getpid()}"):
            async with second.job_lock(wait=False):
                pass
    async with second.job_lock(wait=False):
        pass


async def test_a_job_that_lost_its_lock_session_stops_before_changing_anything(pg, admin) -> None:
    await add_run(pg, "r-1", DAY_A, 3)
    src = tier_source(pg)
    async with src.job_lock(wait=False):
        pid = src._lock.conn.get_server_pid()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)
        with pytest.raises(LockedError, match="lost the tiering lock"):
            await src.claim_day(batch_id="t-lost", dest="x", day=DAY_A, mode="move", files={})
    assert await src.claims() == []


# --------------------------------------------------------------- migration


async def test_a_version_1_store_gains_the_ledger_on_init(tmp_path, admin, monkeypatch) -> None:
    from magsag.backends.postgres import schema as postgres_schema

    backend, _env, cleanup = make_postgres(tmp_path)
    monkeypatch.setattr(postgres_schema, "STEPS", {1: postgres_schema.STEPS[1]})
    try:
        await backend.initialize()
        await add_run(backend, "r-1", DAY_A, 4)
        await backend.close()
        assert await admin.fetchval("SELECT to_regclass($1)", f"{backend.schema}.tier_batches") is None
        monkeypatch.undo()
        await backend.initialize()
        assert backend.schema_version == postgres_schema.PG_SCHEMA_VERSION
        assert await admin.fetchval("SELECT to_regclass($1)", f"{backend.schema}.tier_batches") is not None
        cache = await admin.fetchval(
            "SELECT cache_size FROM pg_sequences WHERE schemaname = $1 AND sequencename = 'events_seq'",
            backend.schema,
        )
        assert cache == 1
        report = await run_tier(backend, open_lake(str(tmp_path / "lake")), hot_days=3)
        assert report.events == 4
    finally:
        await backend.close()
        await cleanup()


# ------------------------------------------------------------ kill -9 at every step

_JOB = textwrap.dedent(
    """
    import asyncio, sys
    from magsag.backends.postgres.store import PostgresStorageBackend
    from magsag.lakehouse.objstore import open_lake
    from magsag.lakehouse.tiering.job import run_tier

    async def main():
        b = PostgresStorageBackend(sys.argv[1], schema=sys.argv[2])
        await b.initialize()
        try:
            await run_tier(b, open_lake(sys.argv[3]), hot_days=3, delete_chunk_rows=4)
        finally:
            await b.close()

    asyncio.run(main())
    """
)


async def _killed_case(tmp_path: Path, k: int) -> tuple[Any, Any, Counter[str], Path, subprocess.CompletedProcess[str]]:
    backend, _env, cleanup = make_postgres(tmp_path)
    await backend.initialize()
    everything = Counter(
        await add_run(backend, "b-1", DAY_B, 10) + await add_run(backend, "b-2", DAY_B, 3, status="running")
    )
    lake_root = tmp_path / f"lake-{k}"
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _JOB, PG_DSN, backend.schema, str(lake_root)],
        env={**os.environ, "PYTHONPATH": str(ROOT), FAULT_ENV: f"tier:{k}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return backend, cleanup, everything, lake_root, proc


# Fault points of the chunked-delete sweep, cut in parts (each a test under the per-test
# timeout): the job has more than 16 steps here, so every k of the first parts must crash;
# the last part runs on until a run finishes.
CHUNKED_PARTS = [(1, 7), (7, 13), (13, 17), (17, 61)]


@pytest.mark.slow
@pytest.mark.parametrize("steps", CHUNKED_PARTS, ids=lambda r: f"k{r[0]}-{r[1] - 1}")
async def test_kill_at_every_step_of_a_chunked_delete_then_rerun(tmp_path, admin, steps) -> None:
    """The generic crash test (tests/tier/test_tier_crash.py) covers whole days, which
    PostgreSQL drops in one statement; here a running run keeps the partition, so the
    selection goes in chunks of 4 (3 chunks), and the job (DuckDB export) is killed at
    every step, every chunk included, then rerun in this process."""
    last = steps == CHUNKED_PARTS[-1]
    finished, k = False, steps[0] - 1
    while not finished and k + 1 < steps[1]:
        cases = await asyncio.gather(*(_killed_case(tmp_path, k + i) for i in (1, 2) if k + i < steps[1]))
        k += 2
        for backend, cleanup, everything, lake_root, proc in cases:
            try:
                # past the last step (only in the last part) the run finishes: exit 0
                assert proc.returncode == FAULT_EXIT_CODE or (last and proc.returncode == 0), proc.stderr[-2000:]
                finished |= proc.returncode == 0
                where = proc.stderr.strip()[-60:] or "no fault"
                await run_tier(backend, open_lake(str(lake_root)), hot_days=3, delete_chunk_rows=4)
                hot, lake = await hot_events(admin, backend.schema), lake_events(lake_root)
                assert hot + lake == everything, where
                assert not hot & lake, where
                assert len(hot) == 3 and len(lake) == 10, where
                assert not await tier_source(backend).unfinished_claims(dest_key(open_lake(str(lake_root))))
            finally:
                await backend.close()
                await cleanup()
    assert finished or not last, "the job never finished"


# ---------------------------------------------------------------------- CLI


def test_the_cli_tiers_a_postgres_store_and_names_the_lock_holder(tmp_path) -> None:
    from tests.cli_helpers import magsag

    _backend, env, cleanup = make_postgres(tmp_path)
    env = {**env, "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake")}
    holder = None
    try:
        assert magsag("data", "demo", "--days", "10", "--runs-per-day", "3", "--json", env=env).code == 0
        plan = magsag("data", "tier", "--dry-run", "--json", env=env).json()
        assert plan["days"] >= 2 and plan["events"] > 0
        res = magsag("data", "tier", "--json", env=env)
        assert res.code == 0, res.err
        rep = res.json()
        assert (rep["days"], rep["events"]) == (plan["days"], plan["events"]) and 0 < rep["ratio"] < 1
        assert rep["deleted_events"] == rep["events"]
        summary = magsag("data", "report", "--days", "0", "--json", env=env).json()
        assert summary["rows"] == rep["events"]

        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, env["MAGSAG_STORAGE_DSN"], env["MAGSAG_STORAGE_PG_SCHEMA"]],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        busy = magsag("data", "tier", "--no-wait", env=env)
        lines = [ln for ln in busy.err.splitlines() if ln.strip()]
        assert busy.code == 3 and len(lines) == 1, busy.err
        assert f"held by magsag-tier pid={holder.pid}" in lines[0]
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(10)
        if cleanup is not None:
            asyncio.run(cleanup())
