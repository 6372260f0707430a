"""Retention of the PostgreSQL hot store: ``vacuum`` by whole day partitions.

Same rules as the SQLite store (see :meth:`magsag.backends.base.StorageBackend.vacuum`): data
before the cutoff goes, except events of runs still ``running`` and the ``keep_days``.
The difference is how: a day whose events all go is a ``DROP TABLE`` of its partition
(instant, no dead rows, no vacuum debt); only a day that keeps some events gets a
``DELETE`` of the others.

Dropping a partition needs a short ACCESS EXCLUSIVE lock on ``events``, taken first (the
order every writer uses, so no deadlock) with ``lock_timeout``; a store kept busy by
long queries makes ``vacuum`` raise :class:`~magsag.backends.errors.LockedError` rather than
stall ingest behind a queued lock.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from magsag.backends.errors import LockedError
from magsag.backends.postgres.conn import require_asyncpg
from magsag.backends.postgres.partitions import NATIVE, DayPartition, drop_partition, partition_sizes
from magsag.backends.postgres.schema import date_day
from magsag.backends.retry import async_retrying
from magsag.backends.schema import US_PER_DAY, hot_cutoff, iso_from_us, to_us

if TYPE_CHECKING:
    from magsag.backends.postgres.store import PostgresStorageBackend

_LOCK_ATTEMPTS = 3
_LOCK_FIRST_WAIT = 1.0  # seconds: the longest first wait between tries


def _running(schema: str) -> str:
    return f"EXISTS (SELECT 1 FROM {schema}.runs r WHERE r.run_id = e.run_id AND r.status = 'running')"


async def run_vacuum(
    b: PostgresStorageBackend,
    hot_days: int,
    max_disk_mb: float | None,
    dry_run: bool,
    *,
    now: datetime | None,
    keep: list[date],
) -> dict[str, Any]:
    """``vacuum`` (arguments validated by the base class; ``keep``: sorted dates)."""
    cutoff_us = to_us(hot_cutoff(hot_days, now))
    keep_set = {date_day(d) for d in keep}
    await b._refresh_partitions()
    if max_disk_mb is not None:
        cutoff_us = max(cutoff_us, await _disk_cutoff(b, cutoff_us, max_disk_mb, now))
    s = b.schema
    candidates = sorted(
        (p for p in b._parts.values() if p.end_us <= cutoff_us and p.day not in keep_set), key=lambda p: p.day
    )

    async def count(c: Any) -> tuple[list[tuple[DayPartition, int, int]], int]:
        per_day = []
        for p in candidates:
            total, gone = await c.fetchrow(
                f"SELECT count(*), count(*) FILTER (WHERE NOT {_running(s)}) FROM {p.table} e"
            )
            per_day.append((p, int(total), int(gone)))
        n_run = await c.fetchval(_runs_sql("SELECT count(*)", s), cutoff_us, *_keep_ranges(keep))
        return per_day, int(n_run)

    per_day, n_run = await b._read(count, "counting what vacuum would delete")
    result: dict[str, Any] = {
        "dry_run": dry_run,
        "cutoff": iso_from_us(cutoff_us),
        "days": [p.date_iso for p, _, gone in per_day if gone],
        "kept_days": [d.isoformat() for d in keep],
    }
    if dry_run:
        result.update(
            runs_to_delete=n_run,
            events_to_delete=sum(gone for _, _, gone in per_day),
            partitions_to_drop=[p.date_iso for p, total, gone in per_day if gone == total],
        )
        return result
    events_deleted = 0
    dropped = []
    for p, total, gone in per_day:
        if total and not gone:
            continue  # every event of this day belongs to a running run
        n = await drop_whole_day(b, p, require_no_running=True) if gone == total else None
        if n is not None:
            events_deleted += n
            dropped.append(p.date_iso)
            continue
        sql = f"DELETE FROM {p.table} e WHERE NOT {_running(s)}"
        status = await b._write(lambda c, q=sql: c.execute(q), f"deleting old events of {p.date_iso}")
        events_deleted += int(status.rsplit(" ", 1)[-1])
    runs_sql = _runs_sql("DELETE", s)
    status = await b._write(lambda c: c.execute(runs_sql, cutoff_us, *_keep_ranges(keep)), "deleting old runs")
    result.update(
        runs_deleted=int(status.rsplit(" ", 1)[-1]),
        events_deleted=events_deleted,
        partitions_dropped=dropped,
    )
    return result


def _runs_sql(verb: str, schema: str) -> str:
    return (
        f"{verb} FROM {schema}.runs WHERE status <> 'running' AND started_at < $1 "
        "AND (ended_at IS NULL OR ended_at < $1) AND NOT EXISTS (SELECT 1 FROM "
        "unnest($2::timestamptz[], $3::timestamptz[]) AS k(lo, hi) WHERE started_at >= k.lo AND started_at < k.hi)"
    )


def _keep_ranges(keep: list[date]) -> tuple[list[int], list[int]]:
    starts = [date_day(d) * US_PER_DAY for d in keep]
    return starts, [s + US_PER_DAY for s in starts]


async def drop_whole_day(b: PostgresStorageBackend, part: DayPartition, *, require_no_running: bool) -> int | None:
    """Drop a day partition; return its row count, or None if ``require_no_running`` and
    it (now) holds events of a running run."""
    asyncpg = require_asyncpg()
    s, mode = b.schema, b.partitioning or NATIVE
    running = _running(s)

    async def drop(conn: Any) -> int | None:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(b.lock_timeout_ms)}")
            await conn.execute(f"LOCK TABLE {s}.events IN ACCESS EXCLUSIVE MODE")
            if await conn.fetchval("SELECT to_regclass($1)", part.table) is None:
                return 0  # dropped meanwhile by another process
            if require_no_running and await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {part.table} e WHERE {running})"
            ):
                return None
            n = await conn.fetchval(f"SELECT count(*) FROM {part.table}")
            await drop_partition(conn, s, mode, part)
            return int(n)

    async def op(conn: Any) -> int | None:
        # Other sessions holding the table is transient: the retry policy, then a LockedError.
        policy = async_retrying(
            lambda e: isinstance(e, asyncpg.LockNotAvailableError),
            attempts=_LOCK_ATTEMPTS,
            first=_LOCK_FIRST_WAIT,
            what=f"magsag vacuum: {s}.events is locked",
        )
        try:
            return await policy(drop, conn)
        except asyncpg.LockNotAvailableError:
            raise LockedError(
                f"cannot drop partition {part.table}: other sessions kept {s}.events locked "
                f"for more than {b.lock_timeout_ms} ms ({_LOCK_ATTEMPTS} tries); try again later"
            ) from None

    n = await b._write(op, f"dropping partition {part.table}")
    if n is not None:
        b._parts.pop(part.day, None)
    return n


async def _disk_cutoff(b: PostgresStorageBackend, cutoff_us: int, max_disk_mb: float, now: datetime | None) -> int:
    """The cutoff that brings the store under ``max_disk_mb`` by dropping whole days, oldest first."""
    found = list(b._parts.values())

    async def sizes(c: Any) -> tuple[dict[int, int], int]:
        per_day = await partition_sizes(c, found)
        other = await c.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r' "
            "AND NOT c.relispartition",
            b.schema,
        )
        return per_day, int(other)

    per_day, other = await b._read(sizes, "measuring the store")
    used = sum(per_day.values()) + other
    limit = max_disk_mb * 1024 * 1024
    if used <= limit:
        return cutoff_us
    today = to_us(hot_cutoff(0, now))
    remaining = used
    new_cutoff = cutoff_us
    for day in sorted(per_day):
        start = day * US_PER_DAY
        if start + US_PER_DAY > today:
            break
        if start + US_PER_DAY <= cutoff_us:
            remaining -= per_day[day]
            continue
        if remaining <= limit:
            break
        remaining -= per_day[day]
        new_cutoff = start + US_PER_DAY
    return new_cutoff
