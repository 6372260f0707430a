"""Deleting a tiered claim's selection from the PostgreSQL hot store.

* :func:`drop_whole_day`: when the day's partition holds nothing outside the selection
  (no row newer than the claim's ``seq_hi``, none of an excluded run), ``DROP TABLE`` it:
  ``LOCK TABLE ONLY events, <partition> IN ACCESS EXCLUSIVE MODE`` under ``lock_timeout``
  (``events`` first: the order writers lock in, so no deadlock), the check repeated under
  the lock, the drop. No dead rows, no vacuum debt, no GIN cleanup. Not granted after 3
  tries, or a late row found: None, and the caller deletes in chunks.
* :func:`delete_in_chunks`: keyset over the primary key ``(ts, event_id)``, one transaction
  of at most ``chunk`` events each, so appends keep flowing and no chunk rescans what an
  earlier one deleted.
* :func:`delete_runs`: the claim's runs, then its orphan placeholders no event refers to.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from magsag.backends.postgres.conn import require_asyncpg
from magsag.backends.postgres.partitions import NATIVE, drop_partition
from magsag.backends.postgres.schema import date_day, partition_bounds
from magsag.backends.retry import async_retrying
from magsag.backends.schema import day_start_us
from magsag.backends.tiering.protocol import Claim

if TYPE_CHECKING:
    from magsag.backends.postgres.store import PostgresStorageBackend

log = logging.getLogger(__name__)

DROP_ATTEMPTS = 3
DROP_FIRST_WAIT = 0.4  # seconds: the longest first wait between tries
Check = Callable[[], Awaitable[None]]


class _LockBusy(Exception):
    """The whole-partition drop could not get its lock within ``lock_timeout``."""


async def _busy_on_lock_timeout(op: Callable[[Any], Awaitable[Any]], c: Any) -> Any:
    asyncpg = require_asyncpg()
    try:
        return await op(c)
    except asyncpg.LockNotAvailableError:
        raise _LockBusy() from None


async def drop_whole_day(
    b: PostgresStorageBackend, ledger: str, claim: Claim, *, lock_timeout_ms: int, check: Check
) -> int | None:
    """Drop the claim's day partition if it holds only the selection; return the rows it
    held (0 if it was already gone), or None when that is not possible."""
    s = b.schema
    if b.partitioning != NATIVE:
        return None  # TimescaleDB: drop_chunks would do it; the chunked delete is used instead
    await b._refresh_partitions()
    part = b._parts.get(date_day(claim.day))
    if part is None:
        return None
    outside = (
        f"SELECT EXISTS (SELECT 1 FROM {part.table} e WHERE e.seq > {int(claim.snapshot['seq_hi'])} "
        f"OR e.run_id = ANY ((SELECT c.excluded_runs FROM {ledger} c WHERE c.batch_id = $1)::text[]))"
    )
    if await b._read(lambda c: c.fetchval(outside, claim.batch_id), f"checking partition {part.table}"):
        return None

    async def op(c: Any) -> int | None:
        async with c.transaction():
            await c.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            await c.execute(f"LOCK TABLE ONLY {s}.events IN ACCESS EXCLUSIVE MODE")
            if await c.fetchval("SELECT to_regclass($1)", part.table) is None:
                return 0  # dropped meanwhile (an earlier attempt of this claim, or vacuum)
            await c.execute(f"LOCK TABLE {part.table} IN ACCESS EXCLUSIVE MODE")
            if await c.fetchval(outside, claim.batch_id):
                return None  # a late row arrived since the check
            n = int(await c.fetchval(f"SELECT count(*) FROM {part.table}"))
            await drop_partition(c, s, NATIVE, part)
            return n

    async def attempt() -> int | None:
        await check()
        return await b._run(
            lambda c: _busy_on_lock_timeout(op, c),
            f"dropping partition {part.table} after tiering",
            idempotent=False,
            passthrough=(_LockBusy,),
        )

    # A busy partition is transient: the retry policy, then the chunked delete instead.
    policy = async_retrying(
        lambda e: isinstance(e, _LockBusy),
        attempts=DROP_ATTEMPTS,
        first=DROP_FIRST_WAIT,
        log=log,
        what=f"magsag tier: {part.table} is busy",
    )
    try:
        n = await policy(attempt)
    except _LockBusy:
        log.info("magsag tier: could not lock %s to drop it; deleting the selection in chunks", part.table)
        return None
    if n is not None:
        b._parts.pop(part.day, None)
    return n


async def delete_in_chunks(
    b: PostgresStorageBackend,
    claim: Claim,
    where: str,
    chunk: int,
    on_chunk: Callable[[int], None] | None,
    *,
    check: Check,
) -> int:
    """Delete the events matching ``where`` (the claim's selection over ``events e``) in
    transactions of at most ``chunk`` rows; return how many."""
    s = b.schema
    lo, hi = partition_bounds(date_day(claim.day))
    sql = (
        f"WITH sel AS (SELECT e.ts, e.event_id FROM {s}.events e WHERE {where} "
        f"AND (e.ts, e.event_id) > ($1::timestamptz, $2::text) ORDER BY e.ts, e.event_id LIMIT {int(chunk)}), "
        f"del AS (DELETE FROM {s}.events d USING sel WHERE d.ts >= '{lo}' AND d.ts < '{hi}' "
        "AND d.ts = sel.ts AND d.event_id = sel.event_id RETURNING 1) "
        "SELECT (SELECT count(*) FROM del) AS n, last.ts, last.event_id "
        "FROM (SELECT ts, event_id FROM sel ORDER BY ts DESC, event_id DESC LIMIT 1) last"
    )
    cursor: tuple[int, str] = (day_start_us(claim.day) - 1, "")
    total = 0
    while True:
        await check()
        row = await b._write(lambda c, k=cursor: c.fetchrow(sql, *k), f"deleting tiered events of {claim.day}")
        if row is None:
            return total
        total += int(row["n"])
        if on_chunk is not None:
            on_chunk(int(row["n"]))
        cursor = (row["ts"], row["event_id"])


async def delete_runs(b: PostgresStorageBackend, ledger: str, claim: Claim) -> int:
    """Delete the claim's runs and its orphan placeholders no hot event refers to any more."""
    s = b.schema

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

    return await b._write(op, f"deleting the tiered runs of {claim.day}")
