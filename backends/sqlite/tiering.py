"""The SQLite hot store's side of tiering (:class:`~magsag.backends.tiering.protocol.TierSource`).

* **Lock**: a ``filelock.FileLock`` (an OS ``flock``) on ``<db>.tier-lock`` next to the
  database. The kernel releases it when the holder dies, kill -9 included, so a crashed
  job never blocks the next one. The holder writes its pid, host and start time to
  ``<db>.tier-lock.holder`` for the refusal message (a file of its own: filelock may
  truncate or remove the lock file).
* **Ledger**: the ``tier_batches`` table (schema v2). A claim row records the frozen
  selection: ``seq_hi`` (the highest ``events.seq`` assigned when the claim was made;
  ``AUTOINCREMENT`` never reuses a number, so later rows always have a higher one) and
  ``excluded_runs`` (runs that were ``running``). ``run_ids`` lists the runs to move.
  ``info`` holds the planned files, orphan runs, and in copy mode the finished claims
  whose rows it skips (``covered_by``). Every query of a claim's events (count, export,
  delete) is the same SQL predicate over the ledger row, so they can never disagree.
* **Export**: DuckDB runs the claim's query inside SQLite (``sqlite_query`` of the
  sqlite_scanner extension, loaded from the ``duckdb-extension-sqlite-scanner`` package by
  path, never from the network), so SQLite's ``ts`` index picks the day and SQLite's
  sorter (spilling to temporary files) orders it; DuckDB streams Arrow batches, in a child
  process (see ``backends/sqlite/export_worker.py``). Without the extension, a plain ``sqlite3``
  cursor with the same query does it, slower.
* **Delete** (``backends/sqlite/tier_delete.py``): the job hands over every exported claim
  at once (:meth:`SQLiteTierSource.delete_claims`). When they select a large share of the
  table (:attr:`~SQLiteTierSource.rebuild_fraction`, a quarter by default), ``events`` is
  rebuilt without them in one transaction; otherwise each claim is deleted in chunks of
  ``chunk_rows`` events, each one writer transaction, so appends from other tasks interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from magsag.backends.duckdb_ext import find_extension
from magsag.backends.errors import LockedError, StorageError, ValidationError
from magsag.backends.schema import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    US_PER_DAY,
    day_of_us,
    day_start_us,
    to_us,
    utc_now,
)
from magsag.backends.sqlite.tier_delete import (
    delete_in_chunks,
    delete_runs,
    rebuild_without,
    rebuild_worthwhile,
)
from magsag.backends.sqlite.tier_ledger import (
    BATCH_COLUMNS,
    CLAIM_META,
    SQLiteLedgerSQL,
    day_covered,
    fetch_claim,
    selection_sql,
    sql_text,
    uncovered_counts,
    used_bytes,
)
from magsag.backends.tiering.base import BaseTierSource, ClaimRequest, Deleted, OnChunk, drain_in_thread
from magsag.backends.tiering.ledger import Ledger, check_id, dumps, worth_claiming
from magsag.backends.tiering.protocol import CLAIMED, DONE, Claim, RunningRun, TierDay

if TYPE_CHECKING:
    import pyarrow as pa
    from magsag.backends.sqlite.store import SQLiteStorageBackend

EXPORT_ENGINES = ("duckdb", "sqlite")
BULK_WAL_PAGES = 65_536  # checkpoint interval while the job deletes (256 MB of 4 kB pages)
JOB_CACHE_KIB = 16_384  # the writer's page cache while a tiering job runs


def sqlite_scanner_path() -> str | None:
    """The sqlite_scanner extension file matching the installed DuckDB, if the package is there."""
    return find_extension("sqlite_scanner")


class SQLiteTierSource(BaseTierSource):
    """:class:`~magsag.backends.tiering.protocol.TierSource` over a SQLite hot store."""

    def __init__(
        self,
        backend: SQLiteStorageBackend,
        *,
        export_engine: str | None = None,
        memory_limit: str = "64MB",
        lock_poll: float = 0.2,
        rebuild_fraction: float = 0.25,
    ):
        self.backend = backend
        self.rebuild_fraction = rebuild_fraction
        engine = export_engine or os.environ.get("MAGSAG_TIER_EXPORT_ENGINE") or "duckdb"
        if engine not in EXPORT_ENGINES:
            raise ValidationError(f"export engine must be one of {', '.join(EXPORT_ENGINES)}; got {engine!r}")
        self.export_engine = engine if (engine == "sqlite" or sqlite_scanner_path()) else "sqlite"
        self.memory_limit = memory_limit
        self.lock_poll = lock_poll
        self._worker: Any = None
        self._autocheckpoint: int | None = None
        self._writer_cache: int | None = None
        self._ro: sqlite3.Connection | None = None
        self._ro_lock = threading.Lock()
        self.ledger = Ledger(SQLiteLedgerSQL(backend, self._read))

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` on this source's own read connection (no mmap, small cache: the job's
        scans do not grow the process the way the backend's mmap'ed readers would), after
        the backend's pending writes are committed."""
        await self.backend.read(lambda c: None)
        return await asyncio.to_thread(self._read_sync, fn)

    def _read_sync(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._ro_lock:
            if self._ro is None:
                conn = self.backend.open_connection()
                conn.execute("PRAGMA query_only = 1")
                conn.execute("PRAGMA mmap_size = 0")
                conn.execute("PRAGMA cache_size = -16384")
                self._ro = conn
            return fn(self._ro)

    @property
    def lock_path(self) -> Path:
        db = self.backend.db_path
        return db.with_name(db.name + ".tier-lock")

    # ------------------------------------------------------------------ lock
    @property
    def holder_path(self) -> Path:
        return self.lock_path.with_name(self.lock_path.name + ".holder")

    @asynccontextmanager
    async def job_lock(self, *, wait: bool = True, timeout: float | None = None) -> AsyncIterator[None]:
        from filelock import FileLock, Timeout

        lock = FileLock(self.lock_path, mode=0o644, thread_local=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                lock.acquire(timeout=0)
                break
            except Timeout:
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    raise LockedError(
                        f"another tiering job holds the lock of {self.backend.db_path}{_holder(self.holder_path)}"
                    ) from None
                await asyncio.sleep(self.lock_poll)
            except OSError as exc:
                raise StorageError(f"cannot open the tier lock {self.lock_path}: {exc.strerror}") from None
        try:
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now().isoformat()}
            with contextlib.suppress(OSError):
                tmp = self.holder_path.with_name(f"{self.holder_path.name}.{os.getpid()}")
                tmp.write_bytes(orjson.dumps(holder))
                os.replace(tmp, self.holder_path)
            yield
        finally:
            with contextlib.suppress(OSError):
                self.holder_path.unlink()
            lock.release()

    # -------------------------------------------------------------- planning
    async def _tierable_days(
        self, cut: int, *, orphans: tuple[str, ...], covered: Mapping[date, tuple[str, ...]]
    ) -> list[TierDay]:
        orphans_json = dumps(orphans)

        def q(c: sqlite3.Connection) -> list[TierDay]:
            # Index-only count per day (events_ts), then the few events of running runs apart.
            total = {
                d: n
                for d, n in c.execute(f"SELECT ts / {US_PER_DAY}, count(*) FROM events WHERE ts < ? GROUP BY 1", (cut,))
            }
            held = {
                d: n
                for d, n in c.execute(
                    f"SELECT e.ts / {US_PER_DAY}, count(*) FROM runs r JOIN events e ON e.run_id = r.run_id "
                    "WHERE r.status = 'running' AND r.run_id NOT IN (SELECT value FROM json_each(?)) AND e.ts < ? "
                    "GROUP BY 1",
                    (orphans_json, cut),
                )
            }
            ev = {d: (n, held.get(d, 0)) for d, n in total.items()}
            rn = {
                d: (n, held)
                for d, n, held in c.execute(
                    f"SELECT started_at / {US_PER_DAY}, count(*), total(status = 'running') FROM runs "
                    "WHERE started_at < ? GROUP BY 1",
                    (cut,),
                )
            }
            total_events = c.execute("SELECT count(*) FROM events").fetchone()[0] or 1
            per_event = used_bytes(c) / total_events
            out = []
            for d in sorted(set(ev) | set(rn)):
                day = day_of_us(int(d) * US_PER_DAY)
                n_ev, held_ev = ev.get(d, (0, 0))
                n_run, held_run = rn.get(d, (0, 0))
                movable_ev, movable_run = int(n_ev - held_ev), int(n_run - held_run)
                if covered.get(day):
                    movable_ev, movable_run = uncovered_counts(c, day, list(covered[day]), orphans_json)
                out.append(
                    TierDay(
                        day=day,
                        events=movable_ev,
                        runs=movable_run,
                        held_events=int(held_ev),
                        held_runs=int(held_run),
                        hot_bytes=int(movable_ev * per_event),
                    )
                )
            return out

        return await self._read(q)

    async def running_runs(self, before: datetime) -> list[RunningRun]:
        cut = to_us(before)

        def q(c: sqlite3.Connection) -> list[RunningRun]:
            rows = c.execute(
                "SELECT run_id, agent_slug, started_at, parent_run_id IS NULL AND metrics = '{}' AND tags = '[]' "
                "FROM runs WHERE status = 'running' AND started_at < ? ORDER BY started_at, run_id",
                (cut,),
            ).fetchall()
            return [RunningRun(r[0], r[1], r[2], bool(r[3])) for r in rows]

        return await self._read(q)

    # ----------------------------------------------------------------- claim
    async def _claim_day(self, req: ClaimRequest) -> Claim | None:
        await self._lean_writer()
        day, covered = req.day, list(req.covered_by)
        lo = day_start_us(day)
        hi = lo + US_PER_DAY

        def op(c: sqlite3.Connection) -> Claim | None:
            if c.execute("SELECT 1 FROM tier_batches WHERE day = ? AND state != ?", (day.isoformat(), DONE)).fetchone():
                return None
            row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            seq_hi = row[0] if row else 0
            excluded = [
                r[0]
                for r in c.execute(
                    "SELECT r.run_id FROM runs r WHERE r.status = 'running' "
                    "AND r.run_id NOT IN (SELECT value FROM json_each(?)) AND EXISTS (SELECT 1 FROM events e "
                    "WHERE e.run_id = r.run_id AND e.ts >= ? AND e.ts < ?) ORDER BY 1",
                    (dumps(req.orphan_runs), lo, hi),
                )
            ]
            run_sql = "SELECT run_id FROM runs WHERE started_at >= ? AND started_at < ? AND status != 'running'"
            params: list[Any] = [lo, hi]
            if covered:
                run_sql += (
                    " AND run_id NOT IN (SELECT j.value FROM tier_batches b, json_each(b.run_ids) j "
                    f"WHERE b.batch_id IN ({', '.join('?' * len(covered))}))"
                )
                params += covered
            run_ids = [r[0] for r in c.execute(run_sql + " ORDER BY run_id", params)]
            meta = {"files": req.files, "orphan_runs": list(req.orphan_runs), "covered_by": covered}
            c.execute(
                f"INSERT INTO tier_batches ({BATCH_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, NULL, NULL, ?, ?, NULL)",
                (
                    req.batch_id,
                    req.dest,
                    day.isoformat(),
                    req.mode,
                    CLAIMED,
                    seq_hi,
                    dumps(excluded),
                    dumps(run_ids),
                    dumps({**req.info, CLAIM_META: meta}),
                    to_us(req.created_at),
                ),
            )
            if excluded or covered:
                n = c.execute(f"SELECT count(*) FROM events WHERE {selection_sql(req.batch_id, day, seq_hi, covered)}")
            else:  # index only
                n = c.execute("SELECT count(*) FROM events WHERE ts >= ? AND ts < ? AND seq <= ?", (lo, hi, seq_hi))
            selected = n.fetchone()[0]
            if not worth_claiming(selected, run_ids):
                c.execute("DELETE FROM tier_batches WHERE batch_id = ?", (req.batch_id,))
                return None
            meta["selected_events"] = selected
            c.execute(
                "UPDATE tier_batches SET info = ? WHERE batch_id = ?",
                (dumps({**req.info, CLAIM_META: meta}), req.batch_id),
            )
            return fetch_claim(c, req.batch_id)

        return await self.backend.write(op)

    # ---------------------------------------------------------------- export
    def _where(self, claim: Claim) -> str:
        return selection_sql(
            claim.batch_id, claim.day, claim.snapshot["seq_hi"], claim.snapshot.get("covered_by") or ()
        )

    async def export_events(self, claim: Claim, *, batch_rows: int = 65_536) -> AsyncIterator[pa.RecordBatch]:
        await self.backend.read(lambda c: None)  # pending appends committed, claim visible
        if self.export_engine == "duckdb":
            gen = self._duckdb_batches(claim, batch_rows)
        else:
            gen = self._sqlite_batches(claim, batch_rows)
        async for batch in drain_in_thread(gen):
            yield batch

    async def _bulk_deletes(self) -> None:
        """Checkpoint the WAL seldom while the job deletes (restored by :meth:`close`).

        Every day's delete dirties the same pages of the random-keyed indexes; with the
        default checkpoint every 1,000 pages each of them is written back to the database
        file (and fsynced) once per chunk instead of once per job (``bench/tier_delete.py``
        times the delete). The WAL grows to at most :data:`BULK_WAL_PAGES` pages meanwhile.
        """
        if self._autocheckpoint is None:
            self._autocheckpoint = await self._swap_pragma("wal_autocheckpoint", BULK_WAL_PAGES)

    async def _end_bulk_deletes(self) -> None:
        before, self._autocheckpoint = self._autocheckpoint, None
        if before is not None:
            await self._swap_pragma("wal_autocheckpoint", before)
            await self._checkpoint()

    async def _swap_pragma(self, name: str, value: int) -> int:
        """Set the writer connection's PRAGMA ``name`` to ``value``; return its value before."""

        def swap(c: sqlite3.Connection) -> int:
            before = int(c.execute(f"PRAGMA {name}").fetchone()[0])
            c.execute(f"PRAGMA {name} = {int(value)}")
            return before

        return await self.backend.write(swap)

    async def _checkpoint(self) -> None:
        """Copy the WAL back into the database file, from a connection of its own (outside
        the writer's transaction; a passive checkpoint never blocks readers or writers)."""

        def checkpoint() -> None:
            conn = sqlite3.connect(self.backend.db_path, timeout=30)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        with contextlib.suppress(sqlite3.Error):
            await asyncio.to_thread(checkpoint)

    async def _lean_writer(self) -> None:
        """Shrink the writer's page cache for the job (restored by :meth:`close`): the claims'
        index scans would otherwise fill all of it (128 MB) with pages the job never reads
        again. The rebuild of a large delete runs with it too; ``bench/tier_delete.py
        --cache-kib N`` times the rebuild and its peak RSS with another size."""
        if self._writer_cache is None:
            self._writer_cache = await self._swap_pragma("cache_size", -JOB_CACHE_KIB)

    async def _restore_writer_cache(self) -> None:
        before, self._writer_cache = self._writer_cache, None
        if before is not None:
            await self._swap_pragma("cache_size", before)

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.to_thread(worker.close)

    async def close(self) -> None:
        """Stop the export worker process (if one was started); close the read connection;
        restore the writer's page cache and checkpoint interval."""
        await self._restore_writer_cache()
        await self._end_bulk_deletes()
        await self._stop_worker()
        with self._ro_lock:
            ro, self._ro = self._ro, None
        if ro is not None:
            ro.close()

    def _export_worker(self) -> Any:
        from magsag.backends.sqlite.export_worker import ExportWorker

        if self._worker is None:
            ext = sqlite_scanner_path() or ""
            # SQLite selects and sorts inside the worker (one thread); DuckDB only converts
            # the rows to Arrow, so one DuckDB thread is enough and holds less memory.
            self._worker = ExportWorker(self.backend.db_path, ext, memory_limit=self.memory_limit, threads=1)
        return self._worker

    def _duckdb_batches(self, claim: Claim, batch_rows: int) -> Any:
        import pyarrow as pa
        from magsag.backends.schema import event_arrow_schema

        worker = self._export_worker()
        schema = event_arrow_schema()
        ts_type = schema.field("ts").type
        # SQLite sorts (its sorter spills to temporary files: memory stays flat whatever the
        # day's size; bench/tier.py --engine compares the engines); DuckDB streams the result as Arrow.
        inner = (
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE {self._where(claim)} "
            "ORDER BY agent_slug, run_id, ts, event_id"
        )
        outer = ", ".join("CAST(ts AS BIGINT) AS ts" if c == "ts" else c for c in EVENT_COLUMNS)
        sql = f"SELECT {outer} FROM sqlite_query('hot', {sql_text(inner)})"
        try:
            for batch in worker.batches(sql, batch_rows):
                arrays = [
                    col.cast(ts_type) if name == "ts" else col
                    for name, col in zip(batch.schema.names, batch.columns, strict=True)
                ]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        except StorageError as exc:
            raise StorageError(f"exporting {claim.day} from {self.backend.db_path}: {exc}") from None

    def _sqlite_batches(self, claim: Claim, batch_rows: int) -> Any:
        from magsag.backends.arrow import events_table

        conn = sqlite3.connect(self.backend.db_path, timeout=30, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only = 1")
            cur = conn.execute(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE {self._where(claim)} "
                "ORDER BY agent_slug, run_id, ts, event_id"
            )
            while rows := cur.fetchmany(batch_rows):
                yield from events_table(rows).to_batches()
        finally:
            conn.close()

    async def export_runs(self, claim: Claim) -> pa.Table:
        from magsag.backends.arrow import runs_table

        await self.backend.read(lambda c: None)
        sql = (
            f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id IN (SELECT value FROM json_each("
            f"(SELECT run_ids FROM tier_batches WHERE batch_id = {sql_text(check_id(claim.batch_id))}))) "
            "ORDER BY agent_slug, started_at, run_id"
        )
        if self.export_engine == "duckdb":
            return await asyncio.to_thread(self._duckdb_runs, sql)
        return runs_table(await self._read(lambda c: c.execute(sql).fetchall()))

    def _duckdb_runs(self, inner: str) -> pa.Table:
        """The runs through the export worker: Arrow straight from DuckDB (tags parsed there)."""
        import pyarrow as pa
        from magsag.backends.schema import run_arrow_schema

        schema = run_arrow_schema()
        cols = {
            "started_at": "CAST(started_at AS BIGINT) AS started_at",
            "ended_at": "CAST(ended_at AS BIGINT) AS ended_at",
            "tags": "from_json(tags, '[\"VARCHAR\"]') AS tags",
        }
        sql = f"SELECT {', '.join(cols.get(c, c) for c in RUN_COLUMNS)} FROM sqlite_query('hot', {sql_text(inner)})"
        batches = list(self._export_worker().batches(sql, 65_536))
        if not batches:
            return schema.empty_table()
        table = pa.Table.from_batches(batches)
        return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)

    # ---------------------------------------------------------------- delete
    async def _delete_claimed(self, claim: Claim, chunk_rows: int, on_chunk: OnChunk) -> Deleted:
        await self._bulk_deletes()
        events = await delete_in_chunks(self.backend, claim, chunk_rows, on_chunk)
        return {"events": events, "runs": await self.backend.write(lambda c: delete_runs(c, claim))}

    async def _delete_claims(self, claims: Sequence[Claim], chunk_rows: int, on_chunk: OnChunk) -> dict[str, Deleted]:
        """Delete several exported claims at once: by rebuilding ``events`` in one transaction
        when they select at least :attr:`rebuild_fraction` of it, else claim by claim in
        chunks (see ``backends/sqlite/tier_delete.py``)."""
        await self._stop_worker()  # the export is over: its process's memory goes back first

        # The strategy needs only sizes: the counts frozen at claim time (rows only leave).
        selected = sum(int(cl.snapshot.get("selected_events") or 0) for cl in claims)
        total = await self._read(lambda c: int(c.execute("SELECT count(*) FROM events").fetchone()[0]))
        if not rebuild_worthwhile(selected, total, self.rebuild_fraction):
            return {cl.batch_id: await self._delete_claimed(cl, chunk_rows, on_chunk) for cl in claims}
        fts = self.backend.enable_fts

        def rebuild(c: sqlite3.Connection) -> dict[str, Deleted]:
            events = rebuild_without(c, claims, fts=fts)
            return {cl.batch_id: {"events": events[cl.batch_id], "runs": delete_runs(c, cl)} for cl in claims}

        out = await self.backend.write(rebuild)
        if on_chunk is not None:
            on_chunk(sum(d["events"] for d in out.values()))
        await self._checkpoint()
        return out

    # ------------------------------------------------------------- coverage
    async def _unarchived_days(self, days: list[date], dest: str | None) -> list[date]:
        return await self._read(lambda c: [d for d in days if not day_covered(c, d, dest)])


# ------------------------------------------------------------------ helpers


def _holder(path: Path) -> str:
    """`` (pid P on HOST since T)`` from the holder's file, or nothing if it cannot be read."""
    try:
        info = orjson.loads(path.read_bytes()[:4096] or b"{}")
    except (OSError, ValueError):
        return ""
    if not isinstance(info, dict) or not info.get("pid"):
        return ""
    return f" (pid {info['pid']} on {info.get('host', '?')} since {str(info.get('since', '?'))[:19]})"
