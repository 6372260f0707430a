"""The SQL of the PostgreSQL tiering ledger (``<schema>.tier_batches``, schema v2):
:class:`PostgresLedgerSQL` (the :class:`~magsag.backends.tiering.ledger.LedgerSQL` the shared
state machine writes through), claim rows, a claim's frozen selection as one WHERE clause
(:func:`selection_sql`), and what finished claims cover (copy mode, vacuum guard).

Used by :mod:`magsag.backends.postgres.tiering`; every query of a claim's events (count,
export, drop check, delete) is :func:`selection_sql`, which reads the claim's lists from its
ledger row, so they can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from magsag.backends.postgres.schema import date_day, partition_bounds
from magsag.backends.schema import from_us, to_us
from magsag.backends.tiering.ledger import check_id, dumps
from magsag.backends.tiering.protocol import Claim

if TYPE_CHECKING:
    from magsag.backends.postgres.store import PostgresStorageBackend

COLUMNS = (
    "batch_id, dest, day, mode, state, seq_hi, excluded_runs, run_ids, orphan_runs, covered_by, files, "
    "selected_events, event_rows, run_rows, info, created_at, finished_at"
)


class PostgresLedgerSQL:
    """The ledger's reads and compare-and-set writes on ``<schema>.tier_batches``."""

    def __init__(self, backend: PostgresStorageBackend):
        self.backend = backend
        self.table = f"{backend.schema}.tier_batches"
        self.where = f"the ledger of schema {backend.schema!r}"

    async def select(
        self, *, dest: str | None = None, day: date | None = None, batch_ids: Sequence[str] | None = None
    ) -> list[Claim]:
        sql = (
            f"SELECT {COLUMNS} FROM {self.table} WHERE ($1::text IS NULL OR dest = $1) "
            "AND ($2::date IS NULL OR day = $2) AND ($3::text[] IS NULL OR batch_id = ANY ($3::text[])) "
            "ORDER BY created_at, batch_id"
        )
        ids = None if batch_ids is None else list(batch_ids)
        rows = await self.backend._read(lambda c: c.fetch(sql, dest, day, ids), "reading the tier ledger")
        return [claim_from_row(r) for r in rows]

    async def put(self, stored: Claim, new: Claim) -> Claim | None:
        sql = (
            f"UPDATE {self.table} SET state = $3, event_rows = $4, run_rows = $5, finished_at = $6, "
            f"info = $7::jsonb WHERE batch_id = $1 AND state = $2 RETURNING {COLUMNS}"
        )
        args = (
            stored.batch_id,
            stored.state,
            new.state,
            new.event_rows,
            new.run_rows,
            to_us(new.finished_at) if new.finished_at is not None else None,
            dumps(new.info),
        )
        row = await self.backend._write(lambda c: c.fetchrow(sql, *args), f"updating tier claim {stored.batch_id}")
        return None if row is None else claim_from_row(row)


def claim_from_row(r: Any) -> Claim:
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


async def uncovered_counts(c: Any, schema: str, day: date, covered: list[str], orphans: list[str]) -> tuple[int, int]:
    """Copy mode: events and terminal runs of ``day`` no finished claim in ``covered`` holds."""
    s, ledger = schema, f"{schema}.tier_batches"
    lo, hi = day_bounds(day)
    n_ev = await c.fetchval(
        f"SELECT count(*) FROM {s}.events e WHERE e.ts >= '{lo}' AND e.ts < '{hi}' "
        f"AND e.run_id NOT IN (SELECT run_id FROM {s}.runs WHERE status = 'running' "
        "AND run_id <> ALL ($2::text[])) "
        f"AND NOT EXISTS (SELECT 1 FROM {ledger} b WHERE b.batch_id = ANY ($1::text[]) "
        "AND e.seq <= b.seq_hi AND e.run_id <> ALL (b.excluded_runs))",
        covered,
        orphans,
    )
    n_run = await c.fetchval(
        f"SELECT count(*) FROM {s}.runs r WHERE r.started_at >= '{lo}' AND r.started_at < '{hi}' "
        f"AND r.status <> 'running' AND NOT EXISTS (SELECT 1 FROM {ledger} b "
        "WHERE b.batch_id = ANY ($1::text[]) AND r.run_id = ANY (b.run_ids))",
        covered,
    )
    return int(n_ev), int(n_run)


async def day_uncovered(c: Any, schema: str, day: date, dest: str | None) -> bool:
    """Whether ``day`` holds an event (of a run not running) or a terminal run that no
    finished claim (to ``dest``, or any) covers: what the vacuum guard keeps."""
    s, ledger = schema, f"{schema}.tier_batches"
    cover = "b.day = $1 AND b.state = 'done' AND ($2::text IS NULL OR b.dest = $2)"
    lo, hi = day_bounds(day)
    ev = await c.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {s}.events e WHERE e.ts >= '{lo}' AND e.ts < '{hi}' "
        f"AND e.run_id NOT IN (SELECT run_id FROM {s}.runs WHERE status = 'running') "
        f"AND NOT EXISTS (SELECT 1 FROM {ledger} b WHERE {cover} AND e.seq <= b.seq_hi "
        "AND e.run_id <> ALL (b.excluded_runs)))",
        day,
        dest,
    )
    if ev:
        return True
    return bool(
        await c.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {s}.runs r WHERE r.started_at >= '{lo}' AND r.started_at < '{hi}' "
            f"AND r.status <> 'running' AND NOT EXISTS (SELECT 1 FROM {ledger} b WHERE {cover} "
            "AND r.run_id = ANY (b.run_ids)))",
            day,
            dest,
        )
    )
