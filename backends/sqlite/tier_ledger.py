"""The SQL of the SQLite tiering ledger (``tier_batches``): :class:`SQLiteLedgerSQL` (the
:class:`~magsag.backends.tiering.ledger.LedgerSQL` the shared state machine writes through),
claim rows, the frozen selection of a claim as one WHERE clause, and what finished claims
cover (copy mode, vacuum guard).

Used by :mod:`magsag.backends.sqlite.tiering`; every query of a claim's events (count, export,
delete) is :func:`selection_sql` over the ledger row, so they can never disagree. The
columns the schema lacks (planned files, orphan runs, ``covered_by``, the selected count)
live in ``info`` under ``_claim``; :class:`~magsag.backends.tiering.protocol.Claim` shows
them as fields, never as info.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson
from magsag.backends.schema import US_PER_DAY, day_start_us, from_us, to_us
from magsag.backends.tiering.ledger import check_id, dumps
from magsag.backends.tiering.protocol import Claim

if TYPE_CHECKING:
    from magsag.backends.sqlite.store import SQLiteStorageBackend

BATCH_COLUMNS = (
    "batch_id, dest, day, mode, state, seq_lo, seq_hi, excluded_runs, run_ids, event_rows, run_rows, info, "
    "created_at, finished_at"
)
CLAIM_META = "_claim"  # the info key holding what the schema has no column for
Reader = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]


class SQLiteLedgerSQL:
    """The ledger's reads and compare-and-set writes on ``tier_batches``.

    Reads go through ``read`` (the tier source's own reader, after pending writes are
    committed); writes through the backend's writer, one transaction each.
    """

    def __init__(self, backend: SQLiteStorageBackend, read: Reader):
        self.backend = backend
        self._read = read
        self.where = f"the ledger of {backend.db_path}"

    async def select(
        self, *, dest: str | None = None, day: date | None = None, batch_ids: Sequence[str] | None = None
    ) -> list[Claim]:
        sql = (
            f"SELECT {BATCH_COLUMNS} FROM tier_batches WHERE (?1 IS NULL OR dest = ?1) "
            "AND (?2 IS NULL OR day = ?2) AND (?3 IS NULL OR batch_id IN (SELECT value FROM json_each(?3))) "
            "ORDER BY created_at, batch_id"
        )
        params = (dest, None if day is None else day.isoformat(), None if batch_ids is None else dumps(list(batch_ids)))
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [claim_from_row(r) for r in rows]

    async def put(self, stored: Claim, new: Claim) -> Claim | None:
        def op(c: sqlite3.Connection) -> Claim | None:
            row = c.execute(
                "SELECT info FROM tier_batches WHERE batch_id = ? AND state = ?", (stored.batch_id, stored.state)
            ).fetchone()
            if row is None:
                return None
            meta = orjson.loads(row[0] or "{}").get(CLAIM_META, {})
            c.execute(
                "UPDATE tier_batches SET state = ?, event_rows = ?, run_rows = ?, finished_at = ?, info = ? "
                "WHERE batch_id = ? AND state = ?",
                (
                    new.state,
                    new.event_rows,
                    new.run_rows,
                    to_us(new.finished_at) if new.finished_at is not None else None,
                    dumps({**new.info, CLAIM_META: meta}),
                    stored.batch_id,
                    stored.state,
                ),
            )
            return fetch_claim(c, stored.batch_id)

        return await self.backend.write(op)


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def selection_sql(batch_id: str, day: date, seq_hi: int, covered_by: Iterable[str] = ()) -> str:
    """The WHERE clause (over ``events``, unaliased) of a claim's selected events."""
    lo = day_start_us(day)
    bid = sql_text(check_id(batch_id))
    where = (
        f"events.ts >= {lo} AND events.ts < {lo + US_PER_DAY} AND events.seq <= {int(seq_hi)} "
        f"AND events.run_id NOT IN (SELECT value FROM json_each("
        f"(SELECT excluded_runs FROM tier_batches WHERE batch_id = {bid})))"
    )
    covered = [sql_text(check_id(b)) for b in covered_by]
    if covered:
        where += (
            f" AND NOT EXISTS (SELECT 1 FROM tier_batches b WHERE b.batch_id IN ({', '.join(covered)}) "
            "AND events.seq <= b.seq_hi AND events.run_id NOT IN (SELECT value FROM json_each(b.excluded_runs)))"
        )
    return where


def claim_from_row(row: tuple[Any, ...]) -> Claim:
    (batch_id, dest, day, mode, state, _lo, seq_hi, excluded, run_ids, ev_rows, run_rows, info, created, finished) = row
    info = orjson.loads(info or "{}")
    meta = info.pop(CLAIM_META, {})
    return Claim(
        batch_id=batch_id,
        dest=dest,
        day=date.fromisoformat(day),
        mode=mode,
        state=state,
        files=dict(meta.get("files", {})),
        run_ids=tuple(orjson.loads(run_ids or "[]")),
        orphan_runs=tuple(meta.get("orphan_runs", ())),
        event_rows=ev_rows,
        run_rows=run_rows,
        snapshot={
            "seq_hi": seq_hi,
            "excluded_runs": orjson.loads(excluded or "[]"),
            "covered_by": list(meta.get("covered_by", ())),
            "selected_events": meta.get("selected_events"),
        },
        info=info,
        created_at=from_us(created) if created is not None else None,
        finished_at=from_us(finished) if finished is not None else None,
    )


def day_covered(c: sqlite3.Connection, day: date, dest: str | None) -> bool:
    """Whether finished claims (to ``dest``, or any) cover every row vacuum could delete from ``day``.

    An event is covered by a claim when ``seq <= seq_hi`` and its run was not excluded.
    Checked cheaply: events newer than the newest claim's bound (index), then only the
    events of runs some claim excluded (a handful, by index).
    """
    lo, hi = day_start_us(day), day_start_us(day) + US_PER_DAY
    cover = "b.day = ? AND b.state = 'done'" + (" AND b.dest = ?" if dest is not None else "")
    cp: list[Any] = [day.isoformat()] + ([dest] if dest is not None else [])
    not_running = "run_id NOT IN (SELECT run_id FROM runs WHERE status = 'running')"
    batches = c.execute(f"SELECT seq_hi, excluded_runs FROM tier_batches b WHERE {cover}", cp).fetchall()
    if c.execute(
        "SELECT 1 FROM runs WHERE started_at >= ? AND started_at < ? AND status != 'running' "
        f"AND run_id NOT IN (SELECT j.value FROM tier_batches b, json_each(b.run_ids) j WHERE {cover}) LIMIT 1",
        (lo, hi, *cp),
    ).fetchone():
        return False
    max_hi = max((b[0] for b in batches), default=-1)
    if c.execute(
        f"SELECT 1 FROM events WHERE ts >= ? AND ts < ? AND seq > ? AND {not_running} LIMIT 1", (lo, hi, max_hi)
    ).fetchone():
        return False
    excluded = sorted({r for b in batches for r in orjson.loads(b[1] or "[]")})
    if not excluded:
        return True
    return not c.execute(
        "SELECT 1 FROM events WHERE run_id IN (SELECT value FROM json_each(?)) AND ts >= ? AND ts < ? "
        f"AND {not_running} AND NOT EXISTS (SELECT 1 FROM tier_batches b WHERE {cover} "
        "AND events.seq <= b.seq_hi AND events.run_id NOT IN (SELECT value FROM json_each(b.excluded_runs))) LIMIT 1",
        (dumps(excluded), lo, hi, *cp),
    ).fetchone()


def used_bytes(c: sqlite3.Connection) -> int:
    page = c.execute("PRAGMA page_size").fetchone()[0]
    return (c.execute("PRAGMA page_count").fetchone()[0] - c.execute("PRAGMA freelist_count").fetchone()[0]) * page


def fetch_claim(c: sqlite3.Connection, batch_id: str) -> Claim | None:
    row = c.execute(f"SELECT {BATCH_COLUMNS} FROM tier_batches WHERE batch_id = ?", (batch_id,)).fetchone()
    return claim_from_row(row) if row else None


def uncovered_counts(c: sqlite3.Connection, day: date, covered: list[str], orphans: str) -> tuple[int, int]:
    """Copy mode: events and terminal runs of ``day`` no finished claim in ``covered`` holds."""
    lo = day_start_us(day)
    ids = ", ".join(sql_text(b) for b in covered)
    n_ev = c.execute(
        f"SELECT count(*) FROM events WHERE ts >= ? AND ts < ? "
        "AND run_id NOT IN (SELECT run_id FROM runs WHERE status = 'running' "
        "AND run_id NOT IN (SELECT value FROM json_each(?))) "
        f"AND NOT EXISTS (SELECT 1 FROM tier_batches b WHERE b.batch_id IN ({ids}) AND events.seq <= b.seq_hi "
        "AND events.run_id NOT IN (SELECT value FROM json_each(b.excluded_runs)))",
        (lo, lo + US_PER_DAY, orphans),
    ).fetchone()[0]
    n_run = c.execute(
        "SELECT count(*) FROM runs WHERE started_at >= ? AND started_at < ? AND status != 'running' "
        f"AND run_id NOT IN (SELECT j.value FROM tier_batches b, json_each(b.run_ids) j WHERE b.batch_id IN ({ids}))",
        (lo, lo + US_PER_DAY),
    ).fetchone()[0]
    return n_ev, n_run
