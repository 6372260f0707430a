"""Erasing from the SQLite hot store (see backends/erase.py).

The tombstone ledger and the erase jobs are two tables created by the first erase, with
two ``BEFORE INSERT`` triggers that drop rows of tombstoned ids (``RAISE(IGNORE)``): a
store never erased pays nothing on its inserts. The tiering rebuild keeps the triggers
(backends/sqlite/tier_delete.py recreates them with the indexes).

A purge runs in one writer transaction with ``PRAGMA secure_delete = ON`` (deleted cells
and freed pages are overwritten with zeros), deletes the full-text entries first, then
the rows, then merges the FTS5 index (``optimize``: tokens of deleted rows stay in older
index segments until a merge). :meth:`SQLiteEraser.scrub` then checkpoints the WAL with
``TRUNCATE``: the WAL's old page images, which still hold the text, are gone and the file
holds only zeroed pages where the rows were.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from magsag.backends import jsontext
from magsag.backends.erase import (
    ERASE_JOBS,
    EVENT,
    RUN,
    TOMBSTONES,
    EraseRequest,
    HotEraser,
    HotSelection,
    PendingJob,
)
from magsag.backends.errors import LockedError
from magsag.backends.schema import iso_from_us, to_us, utc_now

if TYPE_CHECKING:
    from magsag.backends.sqlite.store import SQLiteStorageBackend

_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TOMBSTONES} (kind TEXT NOT NULL, id TEXT NOT NULL, erased_at INTEGER NOT NULL, "
    "job TEXT NOT NULL, PRIMARY KEY (kind, id)) STRICT, WITHOUT ROWID",
    f"CREATE TABLE IF NOT EXISTS {ERASE_JOBS} (job_id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, "
    "state TEXT NOT NULL, request TEXT NOT NULL, plan TEXT NOT NULL, finished_at INTEGER) STRICT",
)
# Late copies of erased rows are dropped silently, like an INSERT OR IGNORE of a known id.
# Row-value IN: one index probe per key (cheaper than an OR inside one EXISTS; the cost
# against unguarded inserts is in docs/governance.md).
_TRIGGERS = (
    "DROP TRIGGER IF EXISTS events_tombstoned",
    "CREATE TRIGGER events_tombstoned BEFORE INSERT ON events "
    f"WHEN ('run', NEW.run_id) IN (SELECT kind, id FROM {TOMBSTONES}) "
    f"OR ('event', NEW.event_id) IN (SELECT kind, id FROM {TOMBSTONES}) BEGIN SELECT RAISE(IGNORE); END",
    "DROP TRIGGER IF EXISTS runs_tombstoned",
    "CREATE TRIGGER runs_tombstoned BEFORE INSERT ON runs "
    f"WHEN ('run', NEW.run_id) IN (SELECT kind, id FROM {TOMBSTONES}) BEGIN SELECT RAISE(IGNORE); END",
)
_TOMB_EVENTS = (
    f"(run_id IN (SELECT id FROM {TOMBSTONES} WHERE kind = 'run') "
    f"OR event_id IN (SELECT id FROM {TOMBSTONES} WHERE kind = 'event'))"
)


def _has(c: sqlite3.Connection, name: str) -> bool:
    return c.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


class SQLiteEraser(HotEraser):
    backend: SQLiteStorageBackend

    # --------------------------------------------------------------- reading
    async def select(self, req: EraseRequest) -> HotSelection:
        # on a reader connection: a --matching scan of a big store never holds the writer
        wanted = jsontext.dumps(sorted(req.run_ids))

        def go(c: sqlite3.Connection) -> HotSelection:
            out = HotSelection()
            params: list[Any] = []
            if req.event_level:
                where = ["(instr(msg, ?) > 0 OR instr(payload, ?) > 0)"]
                params += [req.matching, req.matching]
                col = "ts"
            else:
                where, col = [], "started_at"
            if req.agent:
                where.append("agent_slug = ?")
                params.append(req.agent)
            if req.since_us is not None:
                where.append(f"{col} >= ?")
                params.append(req.since_us)
            if req.until_us is not None:
                where.append(f"{col} < ?")
                params.append(req.until_us)
            if req.run_ids:
                where.append("run_id IN (SELECT value FROM json_each(?))")
                params.append(wanted)
            sql_where = " AND ".join(where) or "1"
            if req.event_level:
                rows = c.execute(f"SELECT event_id FROM events WHERE {sql_where}", params).fetchall()
                out.event_ids = {r[0] for r in rows}
            else:
                rows = c.execute(f"SELECT run_id FROM runs WHERE {sql_where}", params).fetchall()
                out.run_ids = {r[0] for r in rows}
                if req.run_ids:  # runs named by id whose only trace is events (no record yet)
                    out.run_ids |= {
                        r[0]
                        for r in c.execute(
                            "SELECT DISTINCT run_id FROM events WHERE run_id IN (SELECT value FROM json_each(?))",
                            (wanted,),
                        )
                    }
            return out

        return await self.backend.read(go)

    async def parents(self, run_ids: set[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        ids = jsontext.dumps(sorted(run_ids))

        def go(c: sqlite3.Connection) -> dict[str, str]:
            rows = c.execute(
                "SELECT run_id, parent_run_id FROM runs WHERE parent_run_id IN (SELECT value FROM json_each(?))",
                (ids,),
            ).fetchall()
            return {r[0]: r[1] for r in rows}

        return await self.backend.read(go)

    async def count(self, run_ids: set[str], event_ids: set[str]) -> tuple[int, int]:
        runs, events = jsontext.dumps(sorted(run_ids)), jsontext.dumps(sorted(event_ids))

        def go(c: sqlite3.Connection) -> tuple[int, int]:
            ev = c.execute(
                "SELECT count(*) FROM events WHERE run_id IN (SELECT value FROM json_each(?)) "
                "OR event_id IN (SELECT value FROM json_each(?))",
                (runs, events),
            ).fetchone()[0]
            rn = c.execute(
                "SELECT count(*) FROM runs WHERE run_id IN (SELECT value FROM json_each(?))", (runs,)
            ).fetchone()[0]
            return int(ev), int(rn)

        return await self.backend.read(go)

    async def pending(self) -> list[PendingJob]:
        def go(c: sqlite3.Connection) -> list[PendingJob]:
            if not _has(c, ERASE_JOBS):
                return []
            rows = c.execute(
                f"SELECT job_id, state, plan FROM {ERASE_JOBS} WHERE state <> 'done' ORDER BY created_at, job_id"
            ).fetchall()
            return [PendingJob(r[0], r[1], jsontext.loads(r[2])) for r in rows]

        return await self.backend.write(go)

    async def tombstones(self) -> tuple[set[str], set[str]]:
        def go(c: sqlite3.Connection) -> tuple[set[str], set[str]]:
            if not _has(c, TOMBSTONES):
                return set(), set()
            runs, events = set(), set()
            for kind, id_ in c.execute(f"SELECT kind, id FROM {TOMBSTONES}"):
                (runs if kind == RUN else events).add(id_)
            return runs, events

        return await self.backend.write(go)

    async def ledger(self, limit: int = 1000) -> list[dict[str, Any]]:
        def go(c: sqlite3.Connection) -> list[dict[str, Any]]:
            if not _has(c, TOMBSTONES):
                return []
            rows = c.execute(
                f"SELECT kind, id, erased_at, job FROM {TOMBSTONES} ORDER BY erased_at DESC, id LIMIT ?", (limit,)
            ).fetchall()
            return [{"kind": r[0], "id": r[1], "erased_at": iso_from_us(r[2]), "job": r[3]} for r in rows]

        return await self.backend.write(go)

    async def expire(
        self,
        *,
        before_us: int,
        type_: str | None,
        level: str | None,
        agent: str | None,
        runs: bool,
        dry_run: bool,
    ) -> tuple[int, int]:
        fts = self.backend.enable_fts
        where, params = ["ts < ?"], [before_us]
        for col, val in (("type", type_), ("level", level), ("agent_slug", agent)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        cond = " AND ".join(where)
        run_cond = "started_at < ? AND NOT EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.run_id)"
        run_params: list[Any] = [before_us]
        if agent is not None:
            run_cond += " AND agent_slug = ?"
            run_params.append(agent)

        def go(c: sqlite3.Connection) -> tuple[int, int]:
            if dry_run:
                ev = c.execute(f"SELECT count(*) FROM events WHERE {cond}", params).fetchone()[0]
                rn = 0
                if runs:
                    rn = c.execute(
                        "SELECT count(*) FROM runs WHERE started_at < ? AND NOT EXISTS (SELECT 1 FROM events e "
                        f"WHERE e.run_id = runs.run_id AND NOT ({cond.replace('ts', 'e.ts')}))"
                        + (" AND agent_slug = ?" if agent is not None else ""),
                        [before_us, *params] + ([agent] if agent is not None else []),
                    ).fetchone()[0]
                return int(ev), int(rn)
            if fts:
                c.execute(
                    "INSERT INTO events_fts (events_fts, rowid, msg) "
                    f"SELECT 'delete', seq, msg FROM events WHERE {cond} AND msg IS NOT NULL",
                    params,
                )
            ev = c.execute(f"DELETE FROM events WHERE {cond}", params).rowcount
            rn = c.execute(f"DELETE FROM runs WHERE {run_cond}", run_params).rowcount if runs else 0
            return max(ev, 0), max(rn, 0)

        return await self.backend.write(go)

    # --------------------------------------------------------------- writing
    async def record(
        self, job_id: str, request: dict[str, Any], plan: dict[str, Any], run_ids: set[str], event_ids: set[str]
    ) -> None:
        now = to_us(utc_now())

        def go(c: sqlite3.Connection) -> None:
            for stmt in _DDL:
                c.execute(stmt)
            for stmt in _TRIGGERS:
                c.execute(stmt)
            c.execute(
                f"INSERT OR IGNORE INTO {ERASE_JOBS} (job_id, created_at, state, request, plan) "
                "VALUES (?, ?, 'recorded', ?, ?)",
                (job_id, now, jsontext.dumps(request), jsontext.dumps(plan)),
            )
            c.executemany(
                f"INSERT OR IGNORE INTO {TOMBSTONES} (kind, id, erased_at, job) VALUES (?, ?, ?, ?)",
                [(RUN, r, now, job_id) for r in sorted(run_ids)] + [(EVENT, e, now, job_id) for e in sorted(event_ids)],
            )

        await self.backend.write(go)

    async def set_state(self, job_id: str, state: str) -> None:
        now = to_us(utc_now())

        def go(c: sqlite3.Connection) -> None:
            c.execute(
                f"UPDATE {ERASE_JOBS} SET state = ?, finished_at = CASE WHEN ? = 'done' THEN ? END WHERE job_id = ?",
                (state, state, now, job_id),
            )

        await self.backend.write(go)

    async def purge(self) -> tuple[int, int]:
        fts = self.backend.enable_fts

        def go(c: sqlite3.Connection) -> tuple[int, int]:
            if not _has(c, TOMBSTONES):
                return 0, 0
            c.execute("PRAGMA secure_delete = ON")
            try:
                if fts:
                    c.execute(
                        "INSERT INTO events_fts (events_fts, rowid, msg) "
                        f"SELECT 'delete', seq, msg FROM events WHERE {_TOMB_EVENTS} AND msg IS NOT NULL"
                    )
                events = c.execute(f"DELETE FROM events WHERE {_TOMB_EVENTS}").rowcount
                runs = c.execute(
                    f"DELETE FROM runs WHERE run_id IN (SELECT id FROM {TOMBSTONES} WHERE kind = 'run')"
                ).rowcount
                if fts:
                    # merge every index segment: deleted rows' tokens leave the file
                    c.execute("INSERT INTO events_fts (events_fts) VALUES ('optimize')")
                return max(events, 0), max(runs, 0)
            finally:
                c.execute("PRAGMA secure_delete = OFF")

        return await self.backend.write(go)

    async def scrub(self) -> dict[str, Any]:
        """``wal_checkpoint(TRUNCATE)`` from a connection of its own, retried while readers hold the WAL."""
        await self.backend.write(lambda c: None)  # everything before is committed
        path = self.backend.db_path

        def checkpoint() -> dict[str, Any]:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            try:
                conn.execute("PRAGMA busy_timeout = 30000")
                deadline = time.monotonic() + 60
                while True:
                    busy, log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    if not busy:
                        return {"checkpoint": "truncated", "wal_frames": log}
                    if time.monotonic() > deadline:
                        raise LockedError(
                            f"cannot checkpoint {path}: readers hold the WAL; erased bytes may remain in "
                            "the -wal file until the next checkpoint (run the delete again)"
                        )
                    time.sleep(0.2)
            finally:
                conn.close()

        return await asyncio.to_thread(checkpoint)
