"""The PostgreSQL hot store's side of tiering (:class:`~backends.tiering.TierSource`).

**Job lock.** A session advisory lock, ``pg_advisory_lock(hashtextextended('magsag.tier:'
|| schema, 0))``, taken on a dedicated connection (not a pooled one) held for the whole
job: ``pg_try_advisory_lock`` when failing fast, ``pg_advisory_lock`` under
``lock_timeout`` when waiting. The server releases it when that session ends, so a job
killed with ``kill -9`` (its socket closes) never blocks the next one. The lock connection
is named ``magsag-tier pid=N host=H`` so the message of a refused job says who holds it,
and it is pinged before every claim and every delete: a job that lost its lock (server
restart, terminated session) stops before changing anything, since another job may hold
the lock by then.

**Ledger.** ``<schema>.tier_batches`` (schema version 2, :mod:`backends.postgres_schema`):
one row per claim with the frozen bound ``seq_hi``, ``excluded_runs`` (runs that were
``running``), ``run_ids`` (runs to move), ``orphan_runs``, ``covered_by`` (copy mode: the
finished claims whose rows it skips), the planned ``files`` and the claim's ``info``. A
partial unique index on ``day WHERE state <> 'done'`` makes a second unfinished claim of
a day impossible. Every query of a claim's events (count, export, drop check, delete) is
:func:`selection_sql`, which reads the claim's lists from its ledger row, so they can
never disagree.

**Freezing a selection without a monotonic rowid.** Every event gets ``seq`` from
``<schema>.events_seq`` (schema v1 already has the column; v2 pins the sequence to
``CACHE 1``, without which sessions would hand out cached numbers out of order). A
sequence value is assigned when a row is *built*, not when its transaction commits, so
"``seq <= max`` at claim time" alone could name a row whose transaction commits later:
the export would miss it and the delete would remove it, losing it. The bound is made
safe like this (:meth:`PostgresTierSource._freeze`):

1. ``seq_hi := nextval(events_seq)``;
2. read from ``pg_locks`` every transaction that holds a writer's lock (ROW EXCLUSIVE or
   stronger) on ``events`` or on the day's partition, then wait until each of them has
   ended (polling ``pg_locks``; a deadline raises :class:`~backends.errors.LockedError`).

Why that suffices: a writer takes ROW EXCLUSIVE on the table it names (``events``, or a
partition when addressed directly) when its statement is parsed or its cached plan is
locked, *before* the executor evaluates the ``seq`` default, and keeps it until the
transaction ends. So a row with ``seq < seq_hi`` belongs to a transaction that already
held that lock when step 1 ran; step 2 sees it (or it has already ended) and waits for
it to commit or abort. After step 2, every row with ``seq <= seq_hi`` is committed or
gone, and any row built later gets a larger number (the sequence is monotonic with
``CACHE 1``). The claim is then recorded in a REPEATABLE READ transaction that starts
after the wait, so its counts, its excluded runs and its runs see exactly those rows.

Why not the two suggested alternatives: ``LOCK TABLE <day partition> IN SHARE MODE`` is
not enough on its own, because a row inserted through ``events`` gets its ``seq`` *before*
tuple routing opens (and locks) the partition; a writer can hold ``seq = n`` without a
lock on the partition yet (``tests/tier/test_pg_tiering.py`` reproduces it with a slow
default). Locking ``events`` itself in SHARE mode is sound but stops every writer of
every day, and writers queue behind the lock while it waits for a long transaction; the
wait in step 2 blocks no one. Snapshot ``xmin``/``xip`` bounds need the rows' 32-bit
``xmin`` mapped to 64-bit ids, which is ambiguous for rows older than 2^31 transactions
(frozen tuples keep their raw ``xmin``), and give no key to delete in chunks by.

**Export** is in :mod:`backends.postgres_tier_export` (DuckDB ``postgres_query`` sorted
in DuckDB, or an asyncpg cursor).

**Delete.** When nothing outside the selection is in the day's partition (the usual case:
a complete old day, no running run), the partition is dropped: ``LOCK TABLE ONLY events,
<partition> IN ACCESS EXCLUSIVE MODE`` under ``lock_timeout`` (writers lock ``events``
first too, so no deadlock), the check repeated under the lock, then ``DROP TABLE``. No
dead rows, no vacuum debt, no GIN cleanup. When the lock cannot be had (3 tries) or the
partition holds other rows (late data, runs still running), the selection is deleted in
chunks of ``chunk_rows`` instead: keyset over the primary key ``(ts, event_id)``, one
transaction per chunk, so appends keep flowing.

**TimescaleDB** (not available here; the native path is the tested one). The ledger,
the freeze and the chunked delete work unchanged on a hypertable (``seq`` has the same
default, writers lock the hypertable first). The whole-day drop would call
``drop_chunks(events, newer_than => day, older_than => day + 1)`` for a one-day chunk
instead of ``DROP TABLE``, with the same check under lock; a compressed chunk would be
exported like any other (decompression is transparent to ``SELECT``), but must be
dropped whole, never DELETEd from. This source uses the chunked delete on hypertables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from backends.errors import LockedError, StorageError, ValidationError
from backends.postgres_conn import connect_error, query_error, require_asyncpg
from backends.postgres_partitions import NATIVE, DayPartition, drop_partition
from backends.postgres_schema import date_day, partition_bounds
from backends.postgres_tier_export import SELECT_COLUMNS, DuckExporter, choose_engine, cursor_batches
from backends.schema import RUN_COLUMNS, US_PER_DAY, day_start_us, from_us, to_us, utc_now
from backends.tiering import (
    CLAIMED,
    COPY,
    DONE,
    EXPORTED,
    MOVE,
    Claim,
    RunningRun,
    TierDay,
    check_mode,
    dumps,
    sorted_unique,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from backends.postgres import PostgresStorageBackend

log = logging.getLogger(__name__)

_COLUMNS = (
    "batch_id, dest, day, mode, state, seq_hi, excluded_runs, run_ids, orphan_runs, covered_by, files, "
    "selected_events, event_rows, run_rows, info, created_at, finished_at"
)
_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_WRITER_MODES = ("RowExclusiveLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
_WRITERS_SQL = (
    "SELECT DISTINCT l.virtualtransaction, l.pid FROM pg_locks l "
    "WHERE l.locktype = 'relation' AND l.granted AND l.mode = ANY($2::text[]) "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.relation = ANY (SELECT to_regclass(t)::oid FROM unnest($1::text[]) t) "
    "AND l.pid IS DISTINCT FROM pg_backend_pid()"
)
_DROP_ATTEMPTS = 3


def check_id(batch_id: str) -> str:
    if not isinstance(batch_id, str) or not batch_id or len(batch_id) > 80 or not set(batch_id) <= _ID_OK:
        raise ValidationError(f"invalid tier batch id {batch_id!r}")
    return batch_id


def day_bounds(day: date) -> tuple[str, str]:
    """Timestamp literals of ``[day 00:00, day+1 00:00)`` UTC."""
    return partition_bounds(date_day(day))


def selection_sql(schema: str, claim: Claim, *, alias: str = "e") -> str:
    """The WHERE clause (over ``<schema>.events`` aliased ``alias``) of a claim's selected
    events: its day, ``seq <= seq_hi``, not of an excluded run, and in copy mode not covered
    by an earlier finished claim. Lists are read from the claim's ledger row; a claim
    missing from the ledger selects nothing."""
    lo, hi = day_bounds(claim.day)
    bid = "'" + check_id(claim.batch_id) + "'"
    ledger = f"{schema}.tier_batches"
    e = alias
    where = (
        f"{e}.ts >= '{lo}' AND {e}.ts < '{hi}' AND {e}.seq <= {int(claim.snapshot['seq_hi'])} "
        f"AND {e}.run_id <> ALL ((SELECT c.excluded_runs FROM {ledger} c WHERE c.batch_id = {bid})::text[])"
    )
    if claim.snapshot.get("covered_by"):
        where += (
            f" AND NOT EXISTS (SELECT 1 FROM {ledger} b WHERE b.batch_id = ANY "
            f"((SELECT c.covered_by FROM {ledger} c WHERE c.batch_id = {bid})::text[]) "
            f"AND {e}.seq <= b.seq_hi AND {e}.run_id <> ALL (b.excluded_runs))"
        )
    return where


def _claim_from_row(r: Any) -> Claim:
    return Claim(
        batch_id=r["batch_id"],
        dest=r["dest"],
        day=r["day"],
        mode=r["mode"],
        state=r["state"],
        files=dict(json.loads(r["files"] or "{}")),
        run_ids=tuple(r["run_ids"] or ()),
        orphan_runs=tuple(r["orphan_runs"] or ()),
        event_rows=r["event_rows"],
        run_rows=r["run_rows"],
        snapshot={
            "seq_hi": int(r["seq_hi"]),
            "excluded_runs": list(r["excluded_runs"] or ()),
            "covered_by": list(r["covered_by"] or ()),
            "selected_events": r["selected_events"],
        },
        info=json.loads(r["info"] or "{}"),
        created_at=from_us(r["created_at"]) if r["created_at"] is not None else None,
        finished_at=from_us(r["finished_at"]) if r["finished_at"] is not None else None,
    )


class PostgresTierSource:
    """:class:`~backends.tiering.TierSource` over a :class:`~backends.postgres.PostgresStorageBackend`.

    ``freeze_timeout``: how long a claim waits for transactions that were writing events
    when it froze its bound. ``drop_lock_timeout_ms``: how long one try to lock the table
    for a whole-partition drop may wait (default: the backend's ``lock_timeout_ms``).
    """

    def __init__(
        self,
        backend: PostgresStorageBackend,
        *,
        export_engine: str | None = None,
        memory_limit: str = "256MB",
        freeze_timeout: float = 60.0,
        drop_lock_timeout_ms: int | None = None,
        poll: float = 0.05,
    ):
        self.backend = backend
        self.schema = backend.schema
        self.export_engine = choose_engine(export_engine)
        self.memory_limit = memory_limit
        self.freeze_timeout = freeze_timeout
        self.drop_lock_timeout_ms = int(drop_lock_timeout_ms or backend.lock_timeout_ms)
        self.poll = poll
        self._lock_conn: Any = None
        self._ping = asyncio.Lock()  # the job deletes one day while it claims the next: one ping at a time
        self._duck: DuckExporter | None = None

    @property
    def ledger(self) -> str:
        return f"{self.schema}.tier_batches"

    @property
    def lock_key(self) -> str:
        return f"magsag.tier:{self.schema}"

    # ------------------------------------------------------------------ lock
    @asynccontextmanager
    async def job_lock(self, *, wait: bool = True, timeout: float | None = None) -> AsyncIterator[None]:
        asyncpg = require_asyncpg()
        b = self.backend
        b._require()
        name = f"magsag-tier pid={os.getpid()} host={socket.gethostname()}"[:63]
        try:
            conn = await asyncpg.connect(
                b._dsn,
                timeout=b.connect_timeout,
                server_settings={"application_name": name, "statement_timeout": "0", "lock_timeout": "0"},
            )
        except Exception as exc:
            raise connect_error(exc, b._info, b.connect_timeout) from None
        try:
            try:
                if not wait:
                    got = await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", self.lock_key)
                else:
                    if timeout is not None:
                        await conn.execute(f"SET lock_timeout = {max(1, int(timeout * 1000))}")
                    try:
                        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", self.lock_key)
                        got = True
                    except asyncpg.LockNotAvailableError:
                        got = False
                    await conn.execute("SET lock_timeout = 0")
                if not got:
                    raise LockedError(
                        f"another tiering job holds the lock of schema {self.schema!r} on {b.where}"
                        f"{await self._holder(conn)}"
                    )
            except StorageError:
                raise
            except Exception as exc:
                raise query_error(exc, "taking the tiering lock", b._info, 0) from None
            self._lock_conn = conn
            try:
                yield
            finally:
                self._lock_conn = None
                with contextlib.suppress(Exception):
                    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", self.lock_key)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=5)

    async def _holder(self, conn: Any) -> str:
        """`` (held by <application_name>, connected since ...)`` when the holder is visible."""
        with contextlib.suppress(Exception):
            key = await conn.fetchval("SELECT hashtextextended($1, 0)", self.lock_key)
            row = await conn.fetchrow(
                "SELECT a.application_name, a.backend_start::text AS since FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1 LIMIT 1",
                (key >> 32) & 0xFFFFFFFF,
                key & 0xFFFFFFFF,
            )
            if row is not None:
                who = row["application_name"] or "an unnamed session"
                return f" (held by {who}, connected since {row['since'][:19]})"
        return ""

    async def _check_lock(self) -> None:
        """When this source holds the job lock, make sure its session is still alive."""
        conn = self._lock_conn
        if conn is None:
            return
        try:
            async with self._ping:
                if conn.is_closed():
                    raise ConnectionError("closed")
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=30)
        except Exception:
            raise LockedError(
                f"lost the tiering lock of schema {self.schema!r} (its connection to {self.backend.where} ended); "
                "stopping: the next run finishes this work"
            ) from None

    # -------------------------------------------------------------- planning
    async def tierable_days(
        self, cutoff: datetime, *, dest: str, orphan_runs: Iterable[str] = (), mode: str = MOVE
    ) -> list[TierDay]:
        check_mode(mode)
        cut = to_us(cutoff)
        cut -= cut % US_PER_DAY  # complete days only
        orphans = list(sorted_unique(orphan_runs))
        s = self.schema
        await self.backend._refresh_partitions()
        parts = dict(self.backend._parts)

        async def q(c: Any) -> list[TierDay]:
            ev = {
                r[0]: (int(r[1]), int(r[2]))
                for r in await c.fetch(
                    "SELECT (e.ts AT TIME ZONE 'UTC')::date, count(*), count(h.run_id) "
                    f"FROM {s}.events e LEFT JOIN (SELECT run_id FROM {s}.runs WHERE status = 'running' "
                    "AND run_id <> ALL ($2::text[])) h ON h.run_id = e.run_id WHERE e.ts < $1 GROUP BY 1",
                    cut,
                    orphans,
                )
            }
            rn = {
                r[0]: (int(r[1]), int(r[2]))
                for r in await c.fetch(
                    "SELECT (started_at AT TIME ZONE 'UTC')::date, count(*), "
                    f"count(*) FILTER (WHERE status = 'running') FROM {s}.runs WHERE started_at < $1 GROUP BY 1",
                    cut,
                )
            }
            sizes = await _sizes(c, [parts[date_day(d)] for d in ev if date_day(d) in parts])
            out = []
            for day in sorted(set(ev) | set(rn)):
                n_ev, held_ev = ev.get(day, (0, 0))
                n_run, held_run = rn.get(day, (0, 0))
                movable_ev, movable_run = n_ev - held_ev, n_run - held_run
                if mode == COPY:
                    covered = await _done_batches(c, self.ledger, dest, day)
                    if covered:
                        movable_ev, movable_run = await self._uncovered_counts(c, day, covered, orphans)
                size = sizes.get(date_day(day), 0)
                out.append(
                    TierDay(
                        day=day,
                        events=movable_ev,
                        runs=movable_run,
                        held_events=held_ev,
                        held_runs=held_run,
                        hot_bytes=int(size * movable_ev / n_ev) if n_ev else 0,
                    )
                )
            return out

        return await self.backend._read(q, "planning the days to tier")

    async def _uncovered_counts(self, c: Any, day: date, covered: list[str], orphans: list[str]) -> tuple[int, int]:
        """Copy mode: events and terminal runs of ``day`` no finished claim in ``covered`` holds."""
        s, lo, hi = self.schema, *day_bounds(day)
        n_ev = await c.fetchval(
            f"SELECT count(*) FROM {s}.events e WHERE e.ts >= '{lo}' AND e.ts < '{hi}' "
            f"AND e.run_id NOT IN (SELECT run_id FROM {s}.runs WHERE status = 'running' "
            "AND run_id <> ALL ($2::text[])) "
            f"AND NOT EXISTS (SELECT 1 FROM {self.ledger} b WHERE b.batch_id = ANY ($1::text[]) "
            "AND e.seq <= b.seq_hi AND e.run_id <> ALL (b.excluded_runs))",
            covered,
            orphans,
        )
        n_run = await c.fetchval(
            f"SELECT count(*) FROM {s}.runs r WHERE r.started_at >= '{lo}' AND r.started_at < '{hi}' "
            f"AND r.status <> 'running' AND NOT EXISTS (SELECT 1 FROM {self.ledger} b "
            "WHERE b.batch_id = ANY ($1::text[]) AND r.run_id = ANY (b.run_ids))",
            covered,
        )
        return int(n_ev), int(n_run)

    async def running_runs(self, before: datetime) -> list[RunningRun]:
        sql = (
            "SELECT run_id, agent_slug, started_at, parent_run_id IS NULL AND metrics = '{}'::jsonb "
            f"AND cardinality(tags) = 0 AS placeholder FROM {self.schema}.runs "
            "WHERE status = 'running' AND started_at < $1 ORDER BY started_at, run_id"
        )
        rows = await self.backend._read(lambda c: c.fetch(sql, to_us(before)), "listing running runs")
        return [RunningRun(r[0], r[1], r[2], bool(r[3])) for r in rows]

    # ----------------------------------------------------------------- claim
    async def _freeze(self, day: date) -> int:
        """A bound such that every event with ``seq <= bound`` is committed (or gone) and every
        later one gets a larger ``seq``: see the module docstring."""
        s = self.schema
        part = self.backend.partition_table(day)
        rels = [f"{s}.events"] + ([part] if part else [])
        modes = list(_WRITER_MODES)

        async def op(c: Any) -> int:
            cache = await c.fetchval(
                "SELECT cache_size FROM pg_sequences WHERE schemaname = $1 AND sequencename = 'events_seq'", s
            )
            if cache != 1:
                raise StorageError(
                    f"{s}.events_seq has CACHE {cache}; tiering needs CACHE 1 (ALTER SEQUENCE {s}.events_seq CACHE 1)"
                )
            bound = int(await c.fetchval(f"SELECT nextval('{s}.events_seq')"))
            writers = {r[0]: r[1] for r in await c.fetch(_WRITERS_SQL, rels, modes)}
            deadline = time.monotonic() + self.freeze_timeout
            while writers:
                if time.monotonic() >= deadline:
                    pids = ", ".join(str(p) for p in sorted(p for p in writers.values() if p is not None)) or "?"
                    raise LockedError(
                        f"cannot claim {day}: {len(writers)} transaction(s) writing to {s}.events stayed open for "
                        f"more than {self.freeze_timeout:g}s (pids {pids}); try again later"
                    )
                await asyncio.sleep(self.poll)
                still = {r[0] for r in await c.fetch(_WRITERS_SQL, rels, modes)}
                writers = {v: p for v, p in writers.items() if v in still}
            return bound

        return await self.backend._write(op, f"freezing the selection of {day}")

    async def claim_day(
        self,
        *,
        batch_id: str,
        dest: str,
        day: date,
        mode: str,
        files: dict[str, str],
        orphan_runs: Iterable[str] = (),
        info: dict[str, Any] | None = None,
    ) -> Claim | None:
        check_id(batch_id)
        check_mode(mode)
        orphans = list(sorted_unique(orphan_runs))
        s, ledger = self.schema, self.ledger
        lo, hi = day_bounds(day)
        await self._check_lock()
        if await self.backend._read(
            lambda c: c.fetchval(f"SELECT 1 FROM {ledger} WHERE day = $1 AND state <> $2", day, DONE),
            "reading the tier ledger",
        ):
            return None
        await self.backend._refresh_partitions()
        seq_hi = await self._freeze(day)

        async def op(c: Any) -> Claim | None:
            async with c.transaction(isolation="repeatable_read"):
                if await c.fetchval(f"SELECT 1 FROM {ledger} WHERE day = $1 AND state <> $2", day, DONE):
                    return None
                # Running runs are few: probe each one's events of the day (index on run_id, ts).
                excluded = await c.fetchval(
                    f"SELECT coalesce(array_agg(r.run_id ORDER BY r.run_id), '{{}}') FROM {s}.runs r "
                    "WHERE r.status = 'running' AND r.run_id <> ALL ($2::text[]) AND EXISTS (SELECT 1 FROM "
                    f"{s}.events e WHERE e.run_id = r.run_id AND e.ts >= '{lo}' AND e.ts < '{hi}' AND e.seq <= $1)",
                    seq_hi,
                    orphans,
                )
                covered = await _done_batches(c, ledger, dest, day) if mode == COPY else []
                run_ids = await c.fetchval(
                    f"SELECT coalesce(array_agg(r.run_id ORDER BY r.run_id), '{{}}') FROM {s}.runs r "
                    f"WHERE r.started_at >= '{lo}' AND r.started_at < '{hi}' AND r.status <> 'running' "
                    f"AND NOT EXISTS (SELECT 1 FROM {ledger} b WHERE b.batch_id = ANY ($1::text[]) "
                    "AND r.run_id = ANY (b.run_ids))",
                    covered,
                )
                await c.execute(
                    f"INSERT INTO {ledger} (batch_id, dest, day, mode, state, seq_hi, excluded_runs, run_ids, "
                    "orphan_runs, covered_by, files, info, created_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::jsonb, $13)",
                    batch_id,
                    dest,
                    day,
                    mode,
                    CLAIMED,
                    seq_hi,
                    list(excluded),
                    list(run_ids),
                    orphans,
                    covered,
                    dumps(files),
                    dumps(info or {}),
                    to_us(utc_now()),
                )
                draft = Claim(
                    batch_id, dest, day, mode, CLAIMED, files, snapshot={"seq_hi": seq_hi, "covered_by": covered}
                )
                selected = await c.fetchval(f"SELECT count(*) FROM {s}.events e WHERE {selection_sql(s, draft)}")
                if selected == 0 and not run_ids:
                    await c.execute(f"DELETE FROM {ledger} WHERE batch_id = $1", batch_id)
                    return None
                row = await c.fetchrow(
                    f"UPDATE {ledger} SET selected_events = $2 WHERE batch_id = $1 RETURNING {_COLUMNS}",
                    batch_id,
                    selected,
                )
                return _claim_from_row(row)

        return await self.backend._write(op, f"claiming {day} for tiering")

    # ---------------------------------------------------------------- export
    def _select_sql(self, claim: Claim) -> str:
        return f"SELECT {SELECT_COLUMNS} FROM {self.schema}.events e WHERE {selection_sql(self.schema, claim)}"

    async def export_events(self, claim: Claim, *, batch_rows: int = 65_536) -> AsyncIterator[pa.RecordBatch]:
        sql = self._select_sql(claim)
        what = f"exporting {claim.day} from schema {self.schema!r} on {self.backend.where}"
        if self.export_engine == "duckdb":
            if self._duck is None:
                self._duck = DuckExporter(self.backend._dsn, self.schema, memory_limit=self.memory_limit)
            source = await self._duck_source(claim, self._duck, sql)
            gen = self._duck.batches(source, batch_rows, what)
            try:
                while True:
                    batch = await asyncio.to_thread(next, gen, None)
                    if batch is None:
                        return
                    yield batch
            finally:
                await asyncio.to_thread(gen.close)
            return
        pool = self.backend._require()
        try:
            async with pool.acquire() as conn:
                async for batch in cursor_batches(conn, sql, batch_rows):
                    yield batch
        except StorageError:
            raise
        except Exception as exc:
            raise query_error(exc, what, self.backend._info, 0) from None

    async def _duck_source(self, claim: Claim, duck: DuckExporter, sql: str) -> str:
        """A parallel scan of the day's partition when there is one (native partitioning),
        else the claim's query as one stream. Both select exactly :func:`selection_sql`."""
        b = self.backend
        if b.partitioning != NATIVE:
            return duck.query_sql(sql)
        await b._refresh_partitions()
        part = b._parts.get(date_day(claim.day))
        if part is None:
            return duck.query_sql(sql)

        async def lists(c: Any) -> tuple[list[str], list[tuple[int, list[str]]]]:
            row = await c.fetchrow(
                f"SELECT excluded_runs, covered_by FROM {self.ledger} WHERE batch_id = $1", claim.batch_id
            )
            if row is None:
                raise StorageError(f"tier claim {claim.batch_id} is not in the ledger of schema {self.schema!r}")
            covered = await c.fetch(
                f"SELECT seq_hi, excluded_runs FROM {self.ledger} WHERE batch_id = ANY ($1::text[]) ORDER BY batch_id",
                list(row["covered_by"]),
            )
            if len(covered) != len(row["covered_by"]):
                raise StorageError(f"tier claim {claim.batch_id}: a finished claim it skips left the ledger")
            return list(row["excluded_runs"]), [(int(r[0]), list(r[1])) for r in covered]

        excluded, covered = await b._read(lists, "reading the tier ledger")
        return duck.partition_sql(part.table.split(".", 1)[1], int(claim.snapshot["seq_hi"]), excluded, covered)

    async def export_runs(self, claim: Claim) -> pa.Table:
        from backends.arrow import runs_table

        cols = ", ".join("metrics::text" if c == "metrics" else c for c in RUN_COLUMNS)
        lo, hi = day_bounds(claim.day)
        wanted = set(claim.run_ids)
        by_day = f"SELECT {cols} FROM {self.schema}.runs WHERE started_at >= '{lo}' AND started_at < '{hi}'"
        by_id = f"SELECT {cols} FROM {self.schema}.runs WHERE run_id = ANY ($1::text[])"

        async def q(c: Any) -> list[tuple[Any, ...]]:
            # The claim's runs started that day: one range scan, then the few whose start
            # moved since the claim (if any) by id.
            rows = [tuple(r) for r in await c.fetch(by_day) if r[0] in wanted]
            missing = wanted - {r[0] for r in rows}
            if missing:
                rows += [tuple(r) for r in await c.fetch(by_id, sorted(missing))]
            return rows

        rows = await self.backend._read(q, f"exporting the runs of {claim.day}")
        rows.sort(key=lambda r: (r[1], r[4], r[0]))  # RUN_SORT, code point (= "C") order
        return runs_table(rows)

    async def close(self) -> None:
        duck, self._duck = self._duck, None
        if duck is not None:
            await asyncio.to_thread(duck.close)

    # ---------------------------------------------------------- state changes
    async def _update(self, claim: Claim, sets: str, params: tuple[Any, ...], info: dict[str, Any] | None) -> Claim:
        sql = f"UPDATE {self.ledger} SET {sets}info = info || $2::jsonb WHERE batch_id = $1 RETURNING {_COLUMNS}"

        async def op(c: Any) -> Any:
            return await c.fetchrow(sql, claim.batch_id, dumps(info or {}), *params)

        row = await self.backend._write(op, f"updating tier claim {claim.batch_id}")
        if row is None:
            raise StorageError(f"tier claim {claim.batch_id} is not in the ledger of schema {self.schema!r}")
        return _claim_from_row(row)

    async def mark_exported(
        self, claim: Claim, *, event_rows: int, run_rows: int, info: dict[str, Any] | None = None
    ) -> Claim:
        if claim.state == DONE:
            return claim
        return await self._update(
            claim,
            "state = CASE WHEN state = 'done' THEN state ELSE $3 END, event_rows = $4, run_rows = $5, ",
            (EXPORTED, event_rows, run_rows),
            info,
        )

    async def update_info(self, claim: Claim, info: dict[str, Any]) -> Claim:
        return await self._update(claim, "", (), info)

    async def finish_claim(self, claim: Claim, *, info: dict[str, Any] | None = None) -> Claim:
        return await self._update(
            claim, "state = $3, finished_at = coalesce(finished_at, $4), ", (DONE, to_us(utc_now())), info
        )

    # ---------------------------------------------------------------- delete
    async def delete_claimed(
        self, claim: Claim, *, chunk_rows: int = 50_000, on_chunk: Callable[[int], None] | None = None
    ) -> dict[str, int]:
        if claim.mode != MOVE:
            raise StorageError(f"tier claim {claim.batch_id} is a copy; its rows stay in the hot store")
        if claim.state not in (EXPORTED, DONE):
            raise StorageError(f"tier claim {claim.batch_id} is {claim.state}, not exported; nothing deleted")
        await self._check_lock()
        events = await self._drop_whole_day(claim)
        if events is not None:
            if on_chunk is not None:
                on_chunk(events)
        else:
            events = await self._delete_chunks(claim, max(1, int(chunk_rows)), on_chunk)
        return {"events": events, "runs": await self._delete_runs(claim)}

    async def _drop_whole_day(self, claim: Claim) -> int | None:
        """Drop the day's partition when it holds nothing but the selection; return the rows
        it held. None when that is not possible (then delete in chunks)."""
        b, s = self.backend, self.schema
        if b.partitioning != NATIVE:
            return None
        await b._refresh_partitions()
        part = b._parts.get(date_day(claim.day))
        if part is None:
            return None
        asyncpg = require_asyncpg()
        outside = (
            f"SELECT EXISTS (SELECT 1 FROM {part.table} e WHERE e.seq > {int(claim.snapshot['seq_hi'])} "
            f"OR e.run_id = ANY ((SELECT c.excluded_runs FROM {self.ledger} c WHERE c.batch_id = $1)::text[]))"
        )
        if await b._read(lambda c: c.fetchval(outside, claim.batch_id), f"checking partition {part.table}"):
            return None

        async def op(c: Any) -> int | None:
            async with c.transaction():
                await c.execute(f"SET LOCAL lock_timeout = {self.drop_lock_timeout_ms}")
                await c.execute(f"LOCK TABLE ONLY {s}.events IN ACCESS EXCLUSIVE MODE")
                if await c.fetchval("SELECT to_regclass($1)", part.table) is None:
                    return 0  # dropped meanwhile (a previous attempt of this claim, or vacuum)
                await c.execute(f"LOCK TABLE {part.table} IN ACCESS EXCLUSIVE MODE")
                if await c.fetchval(outside, claim.batch_id):
                    return None  # a late row arrived since the check
                n = int(await c.fetchval(f"SELECT count(*) FROM {part.table}"))
                await drop_partition(c, s, NATIVE, part)
                return n

        for attempt in range(_DROP_ATTEMPTS):
            await self._check_lock()
            try:
                n = await b._run(
                    lambda c: _busy_on_lock_timeout(op, c, asyncpg),
                    f"dropping partition {part.table} after tiering",
                    idempotent=False,
                    passthrough=(_LockBusy,),
                )
            except _LockBusy:
                log.info("magsag tier: %s is busy (try %d); retrying", part.table, attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if n is not None:
                b._parts.pop(part.day, None)
            return n
        log.info("magsag tier: could not lock %s to drop it; deleting the selection in chunks", part.table)
        return None

    async def _delete_chunks(self, claim: Claim, chunk: int, on_chunk: Callable[[int], None] | None) -> int:
        s = self.schema
        lo, hi = day_bounds(claim.day)
        sql = (
            f"WITH sel AS (SELECT e.ts, e.event_id FROM {s}.events e WHERE {selection_sql(s, claim)} "
            f"AND (e.ts, e.event_id) > ($1::timestamptz, $2::text) ORDER BY e.ts, e.event_id LIMIT {chunk}), "
            f"del AS (DELETE FROM {s}.events d USING sel WHERE d.ts >= '{lo}' AND d.ts < '{hi}' "
            "AND d.ts = sel.ts AND d.event_id = sel.event_id RETURNING 1) "
            "SELECT (SELECT count(*) FROM del) AS n, last.ts, last.event_id "
            "FROM (SELECT ts, event_id FROM sel ORDER BY ts DESC, event_id DESC LIMIT 1) last"
        )
        cursor: tuple[int, str] = (day_start_us(claim.day) - 1, "")
        total = 0
        while True:
            await self._check_lock()
            row = await self.backend._write(
                lambda c, k=cursor: c.fetchrow(sql, *k), f"deleting tiered events of {claim.day}"
            )
            if row is None:
                return total
            total += int(row["n"])
            if on_chunk is not None:
                on_chunk(int(row["n"]))
            cursor = (row["ts"], row["event_id"])

    async def _delete_runs(self, claim: Claim) -> int:
        s, ledger = self.schema, self.ledger

        async def op(c: Any) -> int:
            async with c.transaction():
                n = await c.fetchval(
                    f"WITH d AS (DELETE FROM {s}.runs WHERE run_id = ANY ((SELECT run_ids FROM {ledger} "
                    "WHERE batch_id = $1)::text[]) RETURNING 1) SELECT count(*) FROM d",
                    claim.batch_id,
                )
                n += await c.fetchval(
                    f"WITH d AS (DELETE FROM {s}.runs r WHERE r.run_id = ANY ($1::text[]) AND r.status = 'running' "
                    f"AND NOT EXISTS (SELECT 1 FROM {s}.events e WHERE e.run_id = r.run_id) RETURNING 1) "
                    "SELECT count(*) FROM d",
                    list(claim.orphan_runs),
                )
                return int(n)

        return await self.backend._write(op, f"deleting the tiered runs of {claim.day}")

    # ------------------------------------------------------------- listings
    async def unfinished_claims(self, dest: str | None = None) -> list[Claim]:
        return [c for c in await self.claims(dest) if c.state != DONE]

    async def claims(self, dest: str | None = None, day: date | None = None) -> list[Claim]:
        sql = (
            f"SELECT {_COLUMNS} FROM {self.ledger} WHERE ($1::text IS NULL OR dest = $1) "
            "AND ($2::date IS NULL OR day = $2) ORDER BY created_at, batch_id"
        )
        rows = await self.backend._read(lambda c: c.fetch(sql, dest, day), "reading the tier ledger")
        return [_claim_from_row(r) for r in rows]

    async def unarchived_days(self, days: Iterable[date], *, dest: str | None = None) -> list[date]:
        wanted = sorted({d if isinstance(d, date) else date.fromisoformat(str(d)) for d in days})
        s, ledger = self.schema, self.ledger
        cover = "b.day = $1 AND b.state = 'done' AND ($2::text IS NULL OR b.dest = $2)"

        async def q(c: Any) -> list[date]:
            out = []
            for day in wanted:
                lo, hi = day_bounds(day)
                ev = await c.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {s}.events e WHERE e.ts >= '{lo}' AND e.ts < '{hi}' "
                    f"AND e.run_id NOT IN (SELECT run_id FROM {s}.runs WHERE status = 'running') "
                    f"AND NOT EXISTS (SELECT 1 FROM {ledger} b WHERE {cover} AND e.seq <= b.seq_hi "
                    "AND e.run_id <> ALL (b.excluded_runs)))",
                    day,
                    dest,
                )
                rn = await c.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {s}.runs r WHERE r.started_at >= '{lo}' AND r.started_at < '{hi}' "
                    f"AND r.status <> 'running' AND NOT EXISTS (SELECT 1 FROM {ledger} b WHERE {cover} "
                    "AND r.run_id = ANY (b.run_ids)))",
                    day,
                    dest,
                )
                if ev or rn:
                    out.append(day)
            return out

        return await self.backend._read(q, "checking which days are archived")


# ------------------------------------------------------------------ helpers


class _LockBusy(Exception):
    """The whole-partition drop could not get its lock within ``lock_timeout``."""


async def _busy_on_lock_timeout(op: Callable[[Any], Any], c: Any, asyncpg: Any) -> Any:
    try:
        return await op(c)
    except asyncpg.LockNotAvailableError:
        raise _LockBusy() from None


async def _done_batches(c: Any, ledger: str, dest: str, day: date) -> list[str]:
    rows = await c.fetch(
        f"SELECT batch_id FROM {ledger} WHERE dest = $1 AND day = $2 AND state = $3 ORDER BY batch_id",
        dest,
        day,
        DONE,
    )
    return [r[0] for r in rows]


async def _sizes(c: Any, parts: list[DayPartition]) -> dict[int, int]:
    from backends.postgres_partitions import partition_sizes

    return await partition_sizes(c, parts)
