"""Deleting tiered rows from the SQLite hot store: in chunks, or by rebuilding the table.

Two ways to take the selections of exported claims out of ``events``
(:meth:`~magsag.backends.sqlite.tiering.SQLiteTierSource.delete_claims` picks one):

* **In chunks** (:func:`delete_in_chunks`): ``chunk_rows`` events per writer transaction,
  full-text entries first, then the rows. Appends from other tasks interleave between
  chunks. Each deleted row costs a lookup in every index, most of them random-keyed
  (``event_id``, ``span_id``, ``run_id``) plus its full-text tokens.
* **By rebuilding** (:func:`rebuild_without`): in ONE writer transaction, copy the rows
  to keep into a new table of the same definition, drop the old one, rename the new one,
  recreate the indexes (sorted builds) and rebuild the full-text index from the kept
  rows. Its cost follows the rows *kept* (and the pages freed), not the rows deleted: a
  job that moves most of the store (the first tiering of a long-running store, the
  benchmark's 23 of 30 days) deletes faster this way (``python3 bench/tier_delete.py``
  times both ways, step by step). Appends wait for the
  transaction; readers keep reading their snapshot.

Both are single SQLite transactions per step: killed at any instant, the store holds
either every row of a step or none of its deletions, and the claim stays ``exported``
until the job marks it done, so the next run deletes whatever is left (again by the
claim's own predicate).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from magsag.backends.sqlite.tier_ledger import selection_sql
from magsag.backends.tiering.ledger import dumps
from magsag.backends.tiering.protocol import Claim

if TYPE_CHECKING:
    from magsag.backends.sqlite.store import SQLiteStorageBackend

KEEP_TABLE = "events_tier_keep"
_TABLE_HEAD = re.compile(r'CREATE TABLE\s+(?:"events"|events)\s*', re.IGNORECASE)


def claim_where(claim: Claim) -> str:
    """The claim's selection over ``events`` (see :func:`~magsag.backends.sqlite.tier_ledger.selection_sql`)."""
    return selection_sql(claim.batch_id, claim.day, claim.snapshot["seq_hi"], claim.snapshot.get("covered_by") or ())


async def delete_in_chunks(
    backend: SQLiteStorageBackend,
    claim: Claim,
    chunk_rows: int,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Delete the claim's events, ``chunk_rows`` per writer transaction; return how many."""
    where = claim_where(claim)
    fts = backend.enable_fts
    chunk = max(1, int(chunk_rows))

    def one_chunk(c: sqlite3.Connection) -> tuple[int, bool]:
        row = c.execute(f"SELECT seq FROM events WHERE {where} ORDER BY seq LIMIT 1 OFFSET {chunk - 1}").fetchone()
        cond = where if row is None else f"{where} AND events.seq <= {int(row[0])}"
        if fts:
            c.execute(
                "INSERT INTO events_fts (events_fts, rowid, msg) "
                f"SELECT 'delete', seq, msg FROM events WHERE {cond} AND msg IS NOT NULL"
            )
        n = c.execute(f"DELETE FROM events WHERE {cond}").rowcount
        return n, row is None

    events = 0
    while True:
        n, last = await backend.write(one_chunk)
        events += n
        if on_chunk is not None:
            on_chunk(n)
        if last:
            return events


def count_selected(c: sqlite3.Connection, claim: Claim) -> int:
    """How many events the claim's selection holds now (index only in the common case)."""
    snap = claim.snapshot
    if not snap.get("excluded_runs") and not snap.get("covered_by"):
        from magsag.backends.schema import US_PER_DAY, day_start_us

        lo = day_start_us(claim.day)
        sql = "SELECT count(*) FROM events WHERE ts >= ? AND ts < ? AND seq <= ?"
        return int(c.execute(sql, (lo, lo + US_PER_DAY, int(snap["seq_hi"]))).fetchone()[0])
    return int(c.execute(f"SELECT count(*) FROM events WHERE {claim_where(claim)}").fetchone()[0])


def rebuild_without(c: sqlite3.Connection, claims: Sequence[Claim], *, fts: bool) -> dict[str, int]:
    """Rebuild ``events`` without the claims' selections (inside the caller's transaction).

    Returns the events deleted per batch id. The table keeps its definition, its indexes,
    its ``seq`` values and its ``AUTOINCREMENT`` high-water mark (``seq_hi`` of later
    claims relies on numbers never being reused).
    """
    counts = {cl.batch_id: count_selected(c, cl) for cl in claims}
    table_sql = c.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()[0]
    index_sql = [
        r[0]
        for r in c.execute(
            # triggers too (the erase guard of backends/sqlite/erase.py): DROP TABLE drops them
            "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = 'events' "
            "AND sql IS NOT NULL ORDER BY type = 'trigger'"
        )
    ]
    row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    high_water = int(row[0]) if row else 0
    head = _TABLE_HEAD.match(table_sql)  # a renamed table's name is quoted: CREATE TABLE "events"
    if head is None:
        raise sqlite3.DatabaseError(f"unexpected definition of the events table: {table_sql[:60]!r}")
    c.execute(f"DROP TABLE IF EXISTS {KEEP_TABLE}")
    c.execute(f"CREATE TABLE {KEEP_TABLE} {table_sql[head.end() :]}")
    gone = " OR ".join(f"({claim_where(cl)})" for cl in claims) or "false"
    kept = c.execute(f"INSERT INTO {KEEP_TABLE} SELECT * FROM events WHERE NOT ({gone}) ORDER BY seq").rowcount
    before = c.execute("SELECT count(*) FROM events").fetchone()[0]
    if before - kept != sum(counts.values()):  # cannot happen: the predicates are the same SQL
        raise sqlite3.DatabaseError(f"rebuild would delete {before - kept} events, the claims select {counts}")
    c.execute("DROP TABLE events")
    c.execute(f"ALTER TABLE {KEEP_TABLE} RENAME TO events")
    c.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'events'",
        (high_water,),
    )
    if c.execute("SELECT changes()").fetchone()[0] == 0:
        c.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (high_water,))
    for sql in index_sql:
        c.execute(sql)
    if fts:
        c.execute("INSERT INTO events_fts (events_fts) VALUES ('rebuild')")
    return counts


def delete_runs(c: sqlite3.Connection, claim: Claim) -> int:
    """Delete the claim's runs, and its orphan placeholder runs no event refers to any more."""
    n = c.execute(
        "DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each("
        "(SELECT run_ids FROM tier_batches WHERE batch_id = ?)))",
        (claim.batch_id,),
    ).rowcount
    n += c.execute(
        "DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each(?)) AND status = 'running' "
        "AND NOT EXISTS (SELECT 1 FROM events WHERE events.run_id = runs.run_id)",
        (dumps(list(claim.orphan_runs)),),
    ).rowcount
    return n


def rebuild_worthwhile(selected: int, total: int, fraction: float) -> bool:
    """Rebuild when the claims select at least ``fraction`` of the table's events."""
    return total > 0 and selected >= fraction * total
