"""Day partitions of the PostgreSQL event table: find, create ahead or on demand, drop.

One partition holds one UTC day, ``<schema>.events_YYYYMMDD`` (native partitioning) or
one one-day chunk (TimescaleDB). Nothing here decides *what* to delete: retention
(:meth:`PostgresStorageBackend.vacuum`) and tiering call these helpers with the days
they chose.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from magsag.backends.postgres.schema import (
    LIST_PARTITIONS,
    create_partition_sql,
    day_date,
    partition_day,
)
from magsag.backends.schema import US_PER_DAY

log = logging.getLogger(__name__)

NATIVE = "native"
TIMESCALE = "timescale"


@dataclass(frozen=True)
class DayPartition:
    """One day of events: its day number (days since 1970-01-01) and table."""

    day: int
    table: str  # schema-qualified

    @property
    def date_iso(self) -> str:
        return day_date(self.day).isoformat()

    @property
    def start_us(self) -> int:
        return self.day * US_PER_DAY

    @property
    def end_us(self) -> int:
        return (self.day + 1) * US_PER_DAY


async def list_partitions(conn: Any, schema: str, mode: str) -> dict[int, DayPartition]:
    """Every day partition (or one-day chunk) of ``<schema>.events``, by day number."""
    found: dict[int, DayPartition] = {}
    if mode == TIMESCALE:
        rows = await conn.fetch(
            "SELECT chunk_schema, chunk_name, range_start, range_end FROM timescaledb_information.chunks "
            "WHERE hypertable_schema = $1 AND hypertable_name = 'events'",
            schema,
        )
        for r in rows:
            start, end = r["range_start"], r["range_end"]
            if start % US_PER_DAY == 0 and end - start == US_PER_DAY:
                day = start // US_PER_DAY
                found[day] = DayPartition(day, f"{r['chunk_schema']}.{r['chunk_name']}")
        return found
    for r in await conn.fetch(LIST_PARTITIONS, f"{schema}.events"):
        day = partition_day(r["relname"])
        if day is not None:
            found[day] = DayPartition(day, f"{schema}.{r['relname']}")
    return found


async def create_partitions(
    conn: Any, schema: str, days: Iterable[int], *, lock_timeout_ms: int
) -> dict[int, DayPartition]:
    """Create the missing day partitions among ``days``; return all partitions after.

    Runs in one transaction under an advisory lock, re-reading the catalog inside it,
    so two processes asking for the same new day create it once.
    """
    wanted = sorted(set(days))
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('magsag.partitions:' || $1))", schema)
        existing = await list_partitions(conn, schema, NATIVE)
        created = []
        for day in wanted:
            if day in existing:
                continue
            for sql in create_partition_sql(schema, day):
                await conn.execute(sql)
            existing[day] = DayPartition(day, f"{schema}.events_{day_date(day).strftime('%Y%m%d')}")
            created.append(day_date(day).isoformat())
    if created:
        log.debug("magsag postgres: created day partitions %s in schema %s", ", ".join(created), schema)
    return existing


async def drop_partition(conn: Any, schema: str, mode: str, part: DayPartition) -> None:
    """Drop one day partition (inside the caller's transaction)."""
    if mode == TIMESCALE:
        await conn.execute(
            "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz, newer_than => $3::timestamptz)",
            f"{schema}.events",
            part.end_us,
            part.start_us,
        )
    else:
        await conn.execute(f"DROP TABLE {part.table}")
    log.info("magsag postgres: dropped day partition %s (%s)", part.table, part.date_iso)


async def partition_sizes(conn: Any, parts: Iterable[DayPartition]) -> dict[int, int]:
    """On-disk bytes of each partition (table, indexes and TOAST)."""
    parts = list(parts)
    if not parts:
        return {}
    rows = await conn.fetch(
        "SELECT t.day, pg_total_relation_size(to_regclass(t.name)) AS bytes "
        "FROM unnest($1::int[], $2::text[]) AS t(day, name)",
        [p.day for p in parts],
        [p.table for p in parts],
    )
    return {r["day"]: int(r["bytes"] or 0) for r in rows}
