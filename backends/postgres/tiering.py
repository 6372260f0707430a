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
row as filters, and sorts; without a partition (TimescaleDB) it runs :func:`selection_sql`
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
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from magsag.backends import jsontext
from magsag.backends.errors import LockedError, StorageError, ValidationError
from magsag.backends.postgres.conn import query_error
from magsag.backends.postgres.partitions import NATIVE, DayPartition
from magsag.backends.postgres.schema import date_day, partition_bounds
from magsag.backends.postgres.tier_delete import delete_in_chunks, delete_runs, drop_whole_day
from magsag.backends.postgres.tier_lock import AdvisoryJobLock
from magsag.backends.postgres.tier_rows import SELECT_COLUMNS, DuckExporter, choose_engine, cursor_batches
from magsag.backends.schema import RUN_COLUMNS, US_PER_DAY, from_us, to_us, utc_now
from magsag.backends.tiering.protocol import (
    CLAIMED,
    COPY,
    DONE,
    EXPORTED,
    MOVE,
    Claim,
    RunningRun,
    TierDay,
    check_deletable,
    check_mode,
    dumps,
    sorted_unique,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from magsag.backends.postgres.store import PostgresStorageBackend

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
        files=dict(jsontext.loads(r["files"] or "{}")),
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
        info=jsontext.loads(r["info"] or "{}"),
        created_at=from_us(r["created_at"]) if r["created_at"] is not None else None,
        finished_at=from_us(r["finished_at"]) if r["finished_at"] is not None else None,
    )


class PostgresTierSource:
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

    @property
    def ledger(self) -> str:
        return f"{self.schema}.tier_batches"

    # ------------------------------------------------------------------ lock
    def job_lock(self, *, wait: bool = True, timeout: float | None = None) -> AbstractAsyncContextManager[None]:
        return self._lock.hold(wait=wait, timeout=timeout)

    async def _check_lock(self) -> None:
        await self._lock.check()

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
        check_deletable(claim)
        await self._check_lock()
        b, ledger = self.backend, self.ledger
        events = await drop_whole_day(
            b, ledger, claim, lock_timeout_ms=self.drop_lock_timeout_ms, check=self._check_lock
        )
        if events is not None:
            if on_chunk is not None:
                on_chunk(events)
        else:
            where = selection_sql(self.schema, claim)
            events = await delete_in_chunks(b, claim, where, max(1, int(chunk_rows)), on_chunk, check=self._check_lock)
        return {"events": events, "runs": await delete_runs(b, ledger, claim)}

    async def delete_claims(
        self, claims: Sequence[Claim], *, chunk_rows: int = 50_000, on_chunk: Callable[[int], None] | None = None
    ) -> dict[str, dict[str, int]]:
        """One claim after the other: a whole day is a partition dropped in one statement."""
        return {c.batch_id: await self.delete_claimed(c, chunk_rows=chunk_rows, on_chunk=on_chunk) for c in claims}

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


async def _done_batches(c: Any, ledger: str, dest: str, day: date) -> list[str]:
    rows = await c.fetch(
        f"SELECT batch_id FROM {ledger} WHERE dest = $1 AND day = $2 AND state = $3 ORDER BY batch_id",
        dest,
        day,
        DONE,
    )
    return [r[0] for r in rows]


async def _sizes(c: Any, parts: list[DayPartition]) -> dict[int, int]:
    from magsag.backends.postgres.partitions import partition_sizes

    return await partition_sizes(c, parts)
