"""The PostgreSQL hot store's side of tiering (:class:`~magsag.backends.tiering.protocol.TierSource`).

**Job lock** (:mod:`magsag.backends.postgres.tier_lock`). A session advisory lock keyed by the
schema name, held on a dedicated connection for the whole job; released by the server when
that session ends (``kill -9`` included). The job pings it before every claim and every
delete, and stops if its session is gone.

**Ledger.** ``<schema>.tier_batches`` (schema version 2, :mod:`magsag.backends.postgres.schema`):
one row per claim with the frozen bound ``seq_hi``, ``excluded_runs`` (runs that were
``running``), ``run_ids`` (runs to move), ``orphan_runs``, ``covered_by`` (copy mode: the
finished claims whose rows it skips), the planned ``files`` and the claim's ``info``. A
partial unique index on ``day WHERE state <> 'done'`` makes a second unfinished claim of
a day impossible. Every query of a claim's events (count, export, drop check, delete) is
:func:`~magsag.backends.postgres.tier_ledger.selection_sql`, which reads the claim's lists
from its ledger row, so they can never disagree. The state changes of a claim are the
shared state machine (:mod:`magsag.backends.tiering.ledger`) writing through
:class:`~magsag.backends.postgres.tier_ledger.PostgresLedgerSQL`.

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
   ended (polling ``pg_locks``; a deadline raises :class:`~magsag.backends.errors.LockedError`).

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

**Export** (:mod:`magsag.backends.postgres.tier_rows`). DuckDB scans the day's partition in
parallel ctid ranges with ``seq <= seq_hi`` pushed down and the run lists of the ledger
row as filters, and sorts; without a partition (TimescaleDB) it runs the claim's selection
through ``postgres_query``; without DuckDB's extension an asyncpg cursor does it.

**Delete** (:mod:`magsag.backends.postgres.tier_delete`). When nothing outside the selection is
in the day's partition (a complete old day, no running run: the usual case), the partition
is dropped under a short ACCESS EXCLUSIVE lock with ``lock_timeout``: no dead rows, no
vacuum debt. Otherwise (late rows, running runs, the lock not granted) the selection is
deleted in chunks, keyset over the primary key, one transaction each. The job deletes one
day while it claims and exports the next: the drop's lock on ``events`` makes the next
claim wait a moment, and the next day's export (a scan of its own partition) is not
affected.

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
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from magsag.backends.errors import LockedError, StorageError
from magsag.backends.postgres.conn import query_error
from magsag.backends.postgres.partitions import NATIVE, DayPartition
from magsag.backends.postgres.schema import date_day
from magsag.backends.postgres.tier_delete import delete_in_chunks, delete_runs, drop_whole_day
from magsag.backends.postgres.tier_ledger import (
    COLUMNS,
    PostgresLedgerSQL,
    claim_from_row,
    day_bounds,
    day_uncovered,
    selection_sql,
    uncovered_counts,
)
from magsag.backends.postgres.tier_lock import AdvisoryJobLock
from magsag.backends.postgres.tier_rows import SELECT_COLUMNS, DuckExporter, choose_engine, cursor_batches
from magsag.backends.schema import RUN_COLUMNS, to_us
from magsag.backends.tiering.base import BaseTierSource, ClaimRequest, Deleted, OnChunk, drain_in_thread
from magsag.backends.tiering.ledger import Ledger, dumps, worth_claiming
from magsag.backends.tiering.protocol import CLAIMED, DONE, Claim, RunningRun, TierDay

if TYPE_CHECKING:
    import pyarrow as pa
    from magsag.backends.postgres.store import PostgresStorageBackend

log = logging.getLogger(__name__)

_WRITER_MODES = ("RowExclusiveLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
_WRITERS_SQL = (
    "SELECT DISTINCT l.virtualtransaction, l.pid FROM pg_locks l "
    "WHERE l.locktype = 'relation' AND l.granted AND l.mode = ANY($2::text[]) "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.relation = ANY (SELECT to_regclass(t)::oid FROM unnest($1::text[]) t) "
    "AND l.pid IS DISTINCT FROM pg_backend_pid()"
)


class PostgresTierSource(BaseTierSource):
    """:class:`~magsag.backends.tiering.protocol.TierSource` over a PostgreSQL hot store.

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
        self._lock = AdvisoryJobLock(backend, f"magsag.tier:{self.schema}", f"schema {self.schema!r}")
        self._duck: DuckExporter | None = None
        self.ledger = Ledger(PostgresLedgerSQL(backend))

    @property
    def ledger_table(self) -> str:
        return f"{self.schema}.tier_batches"

    # ------------------------------------------------------------------ lock
    def job_lock(self, *, wait: bool = True, timeout: float | None = None) -> AbstractAsyncContextManager[None]:
        return self._lock.hold(wait=wait, timeout=timeout)

    async def _check_lock(self) -> None:
        await self._lock.check()

    # -------------------------------------------------------------- planning
    async def _tierable_days(
        self, cut: int, *, orphans: tuple[str, ...], covered: Mapping[date, tuple[str, ...]]
    ) -> list[TierDay]:
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
                    list(orphans),
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
                if covered.get(day):
                    movable_ev, movable_run = await uncovered_counts(c, s, day, list(covered[day]), list(orphans))
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

    async def _claim_day(self, req: ClaimRequest) -> Claim | None:
        day, covered, orphans = req.day, list(req.covered_by), list(req.orphan_runs)
        s, ledger = self.schema, self.ledger_table
        lo, hi = day_bounds(day)
        await self._check_lock()
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
                    req.batch_id,
                    req.dest,
                    day,
                    req.mode,
                    CLAIMED,
                    seq_hi,
                    list(excluded),
                    list(run_ids),
                    orphans,
                    covered,
                    dumps(req.files),
                    dumps(req.info),
                    to_us(req.created_at),
                )
                draft = Claim(
                    req.batch_id,
                    req.dest,
                    day,
                    req.mode,
                    CLAIMED,
                    req.files,
                    snapshot={"seq_hi": seq_hi, "covered_by": covered},
                )
                selected = await c.fetchval(f"SELECT count(*) FROM {s}.events e WHERE {selection_sql(s, draft)}")
                if not worth_claiming(selected, run_ids):
                    await c.execute(f"DELETE FROM {ledger} WHERE batch_id = $1", req.batch_id)
                    return None
                row = await c.fetchrow(
                    f"UPDATE {ledger} SET selected_events = $2 WHERE batch_id = $1 RETURNING {COLUMNS}",
                    req.batch_id,
                    selected,
                )
                return claim_from_row(row)

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
            async for batch in drain_in_thread(self._duck.batches(source, batch_rows, what)):
                yield batch
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
                f"SELECT excluded_runs, covered_by FROM {self.ledger_table} WHERE batch_id = $1", claim.batch_id
            )
            if row is None:
                raise StorageError(f"tier claim {claim.batch_id} is not in the ledger of schema {self.schema!r}")
            covered = await c.fetch(
                f"SELECT seq_hi, excluded_runs FROM {self.ledger_table} WHERE batch_id = ANY ($1::text[]) "
                "ORDER BY batch_id",
                list(row["covered_by"]),
            )
            if len(covered) != len(row["covered_by"]):
                raise StorageError(f"tier claim {claim.batch_id}: a finished claim it skips left the ledger")
            return list(row["excluded_runs"]), [(int(r[0]), list(r[1])) for r in covered]

        excluded, covered = await b._read(lists, "reading the tier ledger")
        return duck.partition_sql(part.table.split(".", 1)[1], int(claim.snapshot["seq_hi"]), excluded, covered)

    async def export_runs(self, claim: Claim) -> pa.Table:
        from magsag.backends.arrow import runs_table

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

    # ---------------------------------------------------------------- delete
    async def _delete_claimed(self, claim: Claim, chunk_rows: int, on_chunk: OnChunk) -> Deleted:
        """A whole day is a partition dropped in one statement; else the selection in chunks."""
        await self._check_lock()
        b, ledger = self.backend, self.ledger_table
        events = await drop_whole_day(
            b, ledger, claim, lock_timeout_ms=self.drop_lock_timeout_ms, check=self._check_lock
        )
        if events is not None:
            if on_chunk is not None:
                on_chunk(events)
        else:
            where = selection_sql(self.schema, claim)
            events = await delete_in_chunks(b, claim, where, chunk_rows, on_chunk, check=self._check_lock)
        return {"events": events, "runs": await delete_runs(b, ledger, claim)}

    # ------------------------------------------------------------- coverage
    async def _unarchived_days(self, days: list[date], dest: str | None) -> list[date]:
        async def q(c: Any) -> list[date]:
            return [d for d in days if await day_uncovered(c, self.schema, d, dest)]

        return await self.backend._read(q, "checking which days are archived")


# ------------------------------------------------------------------ helpers


async def _sizes(c: Any, parts: list[DayPartition]) -> dict[int, int]:
    from magsag.backends.postgres.partitions import partition_sizes

    return await partition_sizes(c, parts)
