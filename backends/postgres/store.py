"""PostgreSQL hot store: the production backend, same contract as SQLite, built for volume.

* **Connections.** One asyncpg pool (``pool_min``..``pool_max``), a server-side
  ``statement_timeout`` on every session, timestamps exchanged as integer microseconds.
  Reads are retried with back-off when the *connection* is lost (server restart,
  terminated session); a write is retried only when the driver proves nothing was sent,
  otherwise it fails with one line saying that appending again is safe (stored events
  are skipped).
* **Schema.** See :mod:`magsag.backends.postgres.schema`: JSONB ``payload``/``metrics`` with GIN
  indexes, a generated ``tsvector`` over ``msg`` with a GIN index, events partitioned by
  UTC day (created ahead at ``init`` and on demand for late or early timestamps), or a
  TimescaleDB hypertable when that extension is available at the first ``init``.
* **Ingest.** See :mod:`magsag.backends.postgres.ingest`: ``append_events`` is one binary
  ``COPY`` per batch (a staging table and ``ON CONFLICT DO NOTHING`` when the batch holds
  stored event ids); ``append_event`` is one prepared statement, and concurrent
  calls share commits.
* **Search.** ``websearch_to_tsquery`` over quoted words (default; no input can raise a
  syntax error) or ``to_tsquery`` syntax with ``raw=True``; ranked by ``ts_rank``.
* **Retention.** See :mod:`magsag.backends.postgres.retention`: ``vacuum`` drops whole day
  partitions when a whole day goes and DELETEs only on days that keep rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from magsag.backends.base import HOT_STORE, StorageBackend, StorageCapabilities, Window
from magsag.backends.capabilities import HotSource, RunKey, RunSelection, merge_days
from magsag.backends.errors import ConfigError, NotFoundError, QueryError, StorageError
from magsag.backends.postgres import duckdb_source as duck
from magsag.backends.postgres import extras
from magsag.backends.postgres import partitions as parts_mod
from magsag.backends.postgres.conn import (
    DsnInfo,
    create_pool,
    is_connection_loss,
    never_sent,
    query_error,
    require_asyncpg,
)
from magsag.backends.postgres.ingest import CopyPath, GroupCommit, insert_events
from magsag.backends.postgres.partitions import NATIVE, TIMESCALE, DayPartition
from magsag.backends.postgres.schema import (
    FTS_CONFIG,
    check_schema_name,
    date_day,
    migrate,
    read_meta,
    target_version,
)
from magsag.backends.postgres.stream import PostgresStream
from magsag.backends.postgres.vectors import probe as pgvector_probe
from magsag.backends.retry import async_retrying
from magsag.backends.schema import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    US_PER_DAY,
    Event,
    Run,
    event_record,
    iso_from_us,
    run_record,
    utc_now,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_WORD = re.compile(r"\w+", re.UNICODE)
_ALNUM = re.compile(r"[^\W_]+", re.UNICODE)
_RUN_SELECT = ", ".join(RUN_COLUMNS)
_EVENT_SELECT = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
_PAGE = 1000
RETRY_FIRST_WAIT = 0.5  # seconds: a lost connection's retries wait up to 0.5, 1, 2, 3 s (full jitter)
RETRY_MAX_WAIT = 3.0
_AGGREGATES = {"avg": "avg(v)", "sum": "sum(v)", "min": "min(v)", "max": "max(v)", "count": "count(v)"}


def websearch_words(query: str) -> str | None:
    """User text -> a ``websearch_to_tsquery`` input of quoted words (all required).

    Each word is split into the same letter/digit runs the index holds, so
    ``foo_bar`` or ``mcp.call`` become the phrase ``"foo bar"``/``"mcp call"``; quoting
    keeps ``or`` and ``-`` literal. None when the text has no words.
    """
    groups = []
    for word in _WORD.findall(query or ""):
        pieces = _ALNUM.findall(word)
        if pieces:
            groups.append('"' + " ".join(pieces) + '"')
    return " ".join(groups) or None


class PostgresStorageBackend(StorageBackend):
    """PostgreSQL hot store living in one schema (``magsag`` by default) of the DSN's database."""

    name: ClassVar[str] = "postgres"
    stream_poll_s: float = 1.0  # stream_events: reads this often even when no NOTIFY came

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "magsag",
        pool_min: int = 1,
        pool_max: int = 10,
        statement_timeout_ms: int = 60_000,
        timescale: bool | None = None,
        premake_days: int = 3,
        read_retries: int = 3,
        connect_timeout: float = 10.0,
        lock_timeout_ms: int = 5_000,
        ack: str = "commit",
        journal_dir: str | Path | None = None,
    ):
        if ack not in ("commit", "journal"):
            raise ConfigError(f"PostgreSQL ack must be 'commit' or 'journal' (got {ack!r})")
        self.ack = ack  # "journal": append_event returns once in the local crash journal (journal.py)
        self._journal_dir = journal_dir
        self._journaled: Any = None
        self._dsn = dsn  # holds the password: never put it in a message, a log or repr()
        self._info = DsnInfo.parse(dsn)
        self.schema = check_schema_name(schema)
        if pool_max < 1 or pool_min < 0:
            raise ConfigError(f"PostgreSQL pool size must be min >= 0 and max >= 1, got {pool_min}..{pool_max}")
        self.pool_min, self.pool_max = pool_min, pool_max
        self.statement_timeout_ms = int(statement_timeout_ms)
        self._want_timescale = timescale
        self.premake_days = max(0, int(premake_days))
        self.read_retries = max(0, int(read_retries))
        self.connect_timeout = connect_timeout
        self.lock_timeout_ms = int(lock_timeout_ms)
        self.enable_fts = True  # the tsvector index always exists (parity with SQLite's flag)
        self.partitioning: str | None = None  # "native" or "timescale", known after initialize()
        self.schema_version: int | None = None
        self.pgvector = False  # known after initialize(): pg_available_extensions has 'vector'
        self._pool: Any = None
        self._parts: dict[int, DayPartition] = {}
        self._parts_lock = asyncio.Lock()
        self._copy_path = CopyPath()
        self._singles = GroupCommit(self._write_singles, max_inflight=min(4, pool_max))
        self._stream = PostgresStream(self)

    @classmethod
    def from_settings(cls, settings: Any) -> PostgresStorageBackend:
        dsn = settings.dsn_value()
        if not dsn:
            raise ConfigError(
                "MAGSAG_STORAGE_DSN is required for the postgres backend (e.g. postgresql://user@host:5432/db)"
            )
        kind = str(settings.backend).strip().lower()
        schema = getattr(settings, "pg_schema", "magsag")
        try:
            check_schema_name(schema)
        except ConfigError as exc:
            raise ConfigError(f"MAGSAG_STORAGE_PG_SCHEMA: {exc}") from None
        return cls(
            dsn,
            schema=schema,
            pool_min=settings.pg_pool_min,
            pool_max=settings.pg_pool_max,
            statement_timeout_ms=settings.pg_statement_timeout_ms,
            timescale=True if kind == "timescale" else None,
            ack=getattr(settings, "pg_ack", "commit"),
            journal_dir=getattr(settings, "pg_journal_dir", None),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._info}, schema={self.schema!r})"

    @property
    def where(self) -> str:
        """``user@host:port/db`` (never the password)."""
        return str(self._info)

    # ------------------------------------------------------------ lifecycle
    async def initialize(self) -> None:
        if self._pool is not None:
            return
        require_asyncpg()
        pool = await create_pool(
            self._dsn,
            self._info,
            min_size=self.pool_min,
            max_size=self.pool_max,
            statement_timeout_ms=self.statement_timeout_ms,
            connect_timeout=self.connect_timeout,
        )
        try:
            async with pool.acquire() as conn:
                meta = await self._migrate(conn)
            self.partitioning = meta.get("partitioning", NATIVE)
            self.schema_version = int(meta.get("schema_version", "0"))
            self._pool = pool
            await self._refresh_partitions()
            self.pgvector = any(await self._read(pgvector_probe, "probing the vector extension"))
            today = date_day(utc_now().date())
            await self.ensure_days(range(today - 1, today + self.premake_days + 1))
            if self.ack == "journal":
                from magsag.backends.postgres.journal import JournaledAppends, default_dir

                journaled = JournaledAppends(self, Path(self._journal_dir or default_dir(self)))
                await journaled.open()
                self._journaled = journaled
        except BaseException as exc:
            self._pool = None
            pool.terminate()
            if isinstance(exc, (StorageError, asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            raise query_error(exc, f"initializing schema {self.schema!r} in {self.where}", self._info, 0) from None

    async def _migrate(self, conn: Any) -> dict[str, str]:
        what = f"creating schema {self.schema!r} in database {self._info.database!r}"
        try:
            meta = await read_meta(conn, self.schema)
            if int(meta.get("schema_version", "0")) == target_version():
                return meta
            timescale = await self._choose_timescale(conn, meta)
            _, meta = await migrate(conn, self.schema, timescale=timescale)
            return meta
        except StorageError:
            raise
        except Exception as exc:
            raise query_error(exc, what, self._info, self.statement_timeout_ms) from None

    async def _choose_timescale(self, conn: Any, meta: dict[str, str]) -> bool:
        """Hypertable or native partitions: fixed when the schema is first created."""
        if "partitioning" in meta:
            if self._want_timescale and meta["partitioning"] != TIMESCALE:
                log.warning("schema %s uses native partitioning; TimescaleDB needs a new schema", self.schema)
            return meta["partitioning"] == TIMESCALE
        if self._want_timescale is False:
            return False
        row = await conn.fetchrow(
            "SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'",
        )
        if row is None:
            if self._want_timescale:
                raise ConfigError(
                    f"the timescaledb extension is not available on {self._info.host}:{self._info.port}; "
                    "use MAGSAG_STORAGE_BACKEND=postgres (native day partitions)"
                )
            return False
        if row["installed_version"] is None:
            try:
                async with conn.transaction():
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            except Exception as exc:
                if self._want_timescale:
                    raise ConfigError(f"cannot enable timescaledb: {str(exc).splitlines()[0]}") from None
                log.warning("timescaledb is installed but cannot be enabled (%s); using native partitions", exc)
                return False
        return True

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._journaled is not None:
            journaled, self._journaled = self._journaled, None
            await journaled.close()
        await self._singles.wait_idle()
        await self._stream.close()
        pool, self._pool = self._pool, None
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except TimeoutError:
            pool.terminate()

    @property
    def capabilities(self) -> StorageCapabilities:
        # the server offers the vector extension (backends/postgres/vectors.py)
        return replace(HOT_STORE, vector_search=self.pgvector)

    # ----------------------------------------------------------------- plumbing
    def _require(self) -> Any:
        if self._pool is None:
            raise RuntimeError("call initialize() (or use 'async with') before using the backend")
        return self._pool

    async def _run(
        self,
        fn: Callable[[Any], Awaitable[T]],
        what: str,
        *,
        idempotent: bool,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> T:
        """Run ``await fn(conn)`` on a pooled connection, mapping errors to one line.

        A lost connection is retried with back-off for idempotent work (reads). A write is
        retried only when the driver proves the statement was never sent (a pooled
        connection the server closed while idle); otherwise the loss is reported, never
        silently replayed. Broken connections are terminated, not handed back to the pool.
        """
        pool = self._require()

        def transient(exc: BaseException) -> bool:
            if isinstance(exc, passthrough):
                return False
            return is_connection_loss(exc) if idempotent else never_sent(exc)

        async def fresh_connections(_: Any) -> None:
            with contextlib.suppress(Exception):
                await pool.expire_connections()

        policy = async_retrying(
            transient,
            attempts=self.read_retries + 1 if idempotent else 2,
            first=RETRY_FIRST_WAIT,
            cap=RETRY_MAX_WAIT,
            before_sleep=fresh_connections,
            log=log,
            what=f"magsag postgres: connection lost while {what}",
        )
        try:
            async for attempt in policy:
                with attempt:
                    async with pool.acquire() as conn:
                        try:
                            return await fn(conn)
                        except Exception as exc:
                            if is_connection_loss(exc):
                                with contextlib.suppress(Exception):  # already detached if it closed itself
                                    conn.terminate()
                            raise
        except (StorageError, *passthrough):
            raise
        except Exception as exc:
            raise query_error(exc, what, self._info, self.statement_timeout_ms) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, fn: Callable[[Any], Awaitable[T]], what: str) -> T:
        if self._journaled is not None:  # read your own journaled appends
            await self._journaled.flush()
        return await self._run(fn, what, idempotent=True)

    async def _write(self, fn: Callable[[Any], Awaitable[T]], what: str) -> T:
        return await self._run(fn, what, idempotent=False)

    async def read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``await fn(conn)`` on a pooled asyncpg connection (for tools and tiering)."""
        return await self._read(fn, "running a read")

    # --------------------------------------------------------------- partitions
    async def _refresh_partitions(self) -> None:
        mode = self.partitioning or NATIVE
        self._parts = await self._read(lambda c: parts_mod.list_partitions(c, self.schema, mode), "listing partitions")

    async def ensure_days(self, days: Iterable[int]) -> None:
        """Make sure a partition exists for each day number (days since 1970-01-01)."""
        if self.partitioning == TIMESCALE:
            return  # TimescaleDB creates chunks itself
        missing = set(days) - self._parts.keys()
        if not missing:
            return
        today = date_day(utc_now().date())
        # A day at or after today also gets the next days, so midnight never waits on DDL.
        for day in list(missing):
            if day >= today - 1:
                missing.update(range(day + 1, day + self.premake_days + 1))
        async with self._parts_lock:
            missing -= self._parts.keys()
            if missing:
                self._parts = await self._write(
                    lambda c: parts_mod.create_partitions(
                        c, self.schema, missing, lock_timeout_ms=self.lock_timeout_ms
                    ),
                    f"creating day partitions in schema {self.schema!r}",
                )

    async def day_partitions(self) -> list[dict[str, Any]]:
        """Every day partition, oldest first: ``day`` (ISO date), ``table`` (qualified), ``bytes``."""
        await self._refresh_partitions()
        found = list(self._parts.values())
        sizes = await self._read(lambda c: parts_mod.partition_sizes(c, found), "sizing partitions")
        return [
            {"day": p.date_iso, "table": p.table, "bytes": sizes.get(p.day, 0)}
            for p in sorted(found, key=lambda p: p.day)
        ]

    def partition_table(self, day: date) -> str | None:
        """The qualified table holding ``day``'s events, if that partition exists."""
        part = self._parts.get(date_day(day))
        return part.table if part else None

    # ------------------------------------------------------------------ writes
    async def _append_row(self, row: tuple[Any, ...]) -> None:
        if self._journaled is not None:
            await self._journaled.append(row)
        else:
            await super()._append_row(row)

    async def _append_validated(self, events: list[Event]) -> int:
        self._require()
        await self.ensure_days({e.ts_us // US_PER_DAY for e in events})
        asyncpg = require_asyncpg()
        passthrough = (asyncpg.CheckViolationError,)
        what = "appending events (appending the same batch again is safe: stored events are skipped)"
        for attempt in range(2):
            try:
                if len(events) == 1:
                    return await self._singles.append(events[0])
                return await self._run(
                    lambda c: self._copy_path.copy_events(c, self.schema, events),
                    what,
                    idempotent=False,
                    passthrough=passthrough,
                )
            except asyncpg.CheckViolationError as exc:
                # A partition another process dropped since we listed them: list again, retry once.
                if "no partition" not in str(exc) or attempt:
                    raise query_error(exc, "appending events", self._info, self.statement_timeout_ms) from None
                await self._refresh_partitions()
                await self.ensure_days({e.ts_us // US_PER_DAY for e in events})
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write_singles(self, events: list[Event]) -> list[int]:
        asyncpg = require_asyncpg()
        return await self._run(
            lambda c: insert_events(c, self.schema, events),
            "appending an event (appending it again is safe: a stored event is skipped)",
            idempotent=False,
            passthrough=(asyncpg.CheckViolationError,),
        )

    async def _create_run(self, run: Run, explicit_start: bool) -> dict[str, Any]:
        sql = (
            f"INSERT INTO {self.schema}.runs AS r (run_id, agent_slug, parent_run_id, status, started_at, tags) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id) DO UPDATE SET "
            "agent_slug = excluded.agent_slug, "
            "parent_run_id = coalesce(excluded.parent_run_id, r.parent_run_id), "
            "status = excluded.status, "
            "started_at = CASE WHEN $7 THEN excluded.started_at ELSE r.started_at END, "
            f"tags = excluded.tags RETURNING {_RUN_SELECT}"
        )
        args = (
            run.run_id,
            run.agent_slug,
            run.parent_run_id,
            run.status,
            run.started_at_us,
            list(run.tags),
            explicit_start,
        )
        row = await self._write(lambda c: c.fetchrow(sql, *args), f"creating run {run.run_id!r}")
        if row is None:  # dropped by the erase guard (backends/postgres/erase.py)
            raise NotFoundError(f"run {run.run_id!r} was erased; its id is refused (tombstone)")
        return run_record(row)

    async def _upsert_runs(self, batch: list[Run]) -> int:
        """Write whole run records (insert, or replace every field) in one transaction."""
        updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS[1:])
        sql = (
            f"INSERT INTO {self.schema}.runs ({_RUN_SELECT}) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) "
            f"ON CONFLICT (run_id) DO UPDATE SET {updates}"
        )
        rows = [
            (r.run_id, r.agent_slug, r.parent_run_id, r.status, r.started_at_us, r.ended_at_us, r.metrics, list(r.tags))
            for r in batch
        ]

        async def op(conn: Any) -> int:
            async with conn.transaction():
                await conn.executemany(sql, rows)
            return len(rows)

        return await self._write(op, f"writing {len(rows)} runs")

    async def _update_run(
        self, run_id: str, status: str | None, ended_us: int | None, patch: str | None, clear_end: bool
    ) -> dict[str, Any]:
        sql = (
            f"UPDATE {self.schema}.runs SET status = coalesce($2, status), "
            "ended_at = CASE WHEN $5 THEN NULL ELSE coalesce($3, ended_at) END, "
            "metrics = CASE WHEN $4::jsonb IS NULL THEN metrics ELSE metrics || $4::jsonb END "
            f"WHERE run_id = $1 RETURNING {_RUN_SELECT}"
        )
        row = await self._write(
            lambda c: c.fetchrow(sql, run_id, status, ended_us, patch, clear_end), f"updating run {run_id!r}"
        )
        if row is None:
            raise NotFoundError(f"run {run_id!r} not found")
        return run_record(row)

    # ------------------------------------------------------------------- reads
    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        sql = f"SELECT {_RUN_SELECT} FROM {self.schema}.runs WHERE run_id = $1"
        row = await self._read(lambda c: c.fetchrow(sql, run_id), f"reading run {run_id!r}")
        return run_record(row) if row else None

    async def _list_runs(self, window: Window, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []

        def add(cond: str, value: Any) -> None:
            params.append(value)
            where.append(cond.format(f"${len(params)}"))

        if window.agent_slug is not None:
            add("agent_slug = {}", window.agent_slug)
        if status is not None:
            add("status = {}", status)
        if window.since_us is not None:
            add("started_at >= {}", window.since_us)
        if window.until_us is not None:
            add("started_at < {}", window.until_us)
        sql = f"SELECT {_RUN_SELECT} FROM {self.schema}.runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY started_at DESC, run_id DESC LIMIT ${len(params) + 1} OFFSET ${len(params) + 2}"
        rows = await self._read(lambda c: c.fetch(sql, *params, limit, offset), "listing runs")
        return [run_record(r) for r in rows]

    async def _events_page(
        self, run_id: str, event_type: str | None, level: str | None, after: Any, n: int
    ) -> tuple[list[tuple[Any, ...]], Any]:
        where, params = ["e.run_id = $1"], [run_id]
        if event_type is not None:
            params.append(event_type)
            where.append(f"e.type = ${len(params)}")
        if level is not None:
            params.append(level)
            where.append(f"e.level = ${len(params)}")
        k = len(params)
        if after is not None:
            params += list(after)
            where.append(f"(e.ts, e.seq) > (${k + 1}, ${k + 2})")
        sql = (
            f"SELECT {_EVENT_SELECT}, e.seq FROM {self.schema}.events e WHERE {' AND '.join(where)} "
            f"ORDER BY e.ts, e.seq LIMIT ${len(params) + 1}"
        )
        rows = await self._read(lambda c: c.fetch(sql, *params, n), f"reading events of run {run_id!r}")
        return [tuple(r)[:-1] for r in rows], ((rows[-1]["ts"], rows[-1]["seq"]) if rows else after)

    def _stream_events(self, flt: Any, cursor: str | None, follow: bool) -> AsyncIterator[dict[str, Any]]:
        self._require()
        return self._stream.events(flt, cursor, follow=follow)

    async def _search_text(self, query: str, window: Window, limit: int, raw: bool) -> list[dict[str, Any]]:
        """Full-text search over ``msg``, best match first (``ts_rank``, then newest).

        Default: ``query`` is words, all required (``websearch_to_tsquery`` over quoted
        words). ``raw=True``: PostgreSQL ``to_tsquery`` syntax (``&``, ``|``, ``!``,
        ``<->``, prefix ``:*``); a malformed raw query raises :class:`QueryError`.
        """
        if raw:
            if "\x00" in query:
                raise QueryError("malformed full-text query: it contains a NUL character")
            text = query
            fn = "to_tsquery"
        else:
            text = websearch_words(query)  # type: ignore[assignment]
            fn = "websearch_to_tsquery"
        if not text or not text.strip():
            return []
        params: list[Any] = [text]
        filters = []
        bounds = (("e.agent_slug =", window.agent_slug), ("e.ts >=", window.since_us), ("e.ts <", window.until_us))
        for cond, val in bounds:
            if val is not None:
                params.append(val)
                filters.append(f"{cond} ${len(params)}")
        params.append(limit)
        extra = "".join(f" AND {f}" for f in filters)
        sql = (
            f"WITH q AS MATERIALIZED (SELECT {fn}('{FTS_CONFIG}', $1) AS q) "
            f"SELECT {_EVENT_SELECT}, ts_rank(e.msg_tsv, q.q, 1) AS score "
            f"FROM q, {self.schema}.events e WHERE e.msg_tsv @@ q.q{extra} "
            f"ORDER BY score DESC, e.ts DESC LIMIT ${len(params)}"
        )
        asyncpg = require_asyncpg()

        async def run(c: Any) -> list[Any]:
            try:
                return await c.fetch(sql, *params)
            except asyncpg.PostgresSyntaxError as exc:
                if raw:
                    raise QueryError(
                        f"malformed full-text query {query!r}: {str(exc).splitlines()[0]}; "
                        "search without --raw to match the words as typed"
                    ) from None
                raise

        rows = await self._read(run, "searching events")
        out = []
        for r in rows:
            rec = event_record(tuple(r)[:-1])
            rec["score"] = float(r["score"])
            out.append(rec)
        return out

    async def _query_metrics(self, metric_name: str, window: Window, aggregation: str) -> tuple[Any, int]:
        cond, params = extras.metric_where(metric_name, window.agent_slug, window.since_us, window.until_us)
        if aggregation.startswith("p"):
            agg = f"percentile_cont({int(aggregation[1:]) / 100}) WITHIN GROUP (ORDER BY v)"
        else:
            agg = _AGGREGATES[aggregation]
        sql = (
            f"SELECT {agg} AS value, count(v) AS n FROM (SELECT {extras.METRIC_VALUE} AS v "
            f"FROM {self.schema}.events WHERE {cond}) m"
        )
        row = await self._read(lambda c: c.fetchrow(sql, *params), f"aggregating metric {metric_name!r}")
        return row["value"], int(row["n"])

    # --------------------------------------------------------------- retention
    async def _vacuum(
        self, hot_days: int, max_disk_mb: float | None, dry_run: bool, now: datetime | None, keep: list[date]
    ) -> dict[str, Any]:
        """Delete data older than the cutoff: whole day partitions are dropped, not DELETEd.

        A day before the cutoff whose events all go (no run of it is still ``running``)
        is dropped with ``DROP TABLE`` (no bloat, no vacuum debt); a day that keeps some
        events gets a ``DELETE`` of the others. ``keep_days`` are left untouched.
        """
        from magsag.backends.postgres.retention import run_vacuum

        return await run_vacuum(self, hot_days, max_disk_mb, dry_run, now=now, keep=keep)

    async def drop_day_partition(self, day: date) -> int:
        """Drop one whole day of events, whatever runs they belong to; return the rows dropped.

        For tiering, after that day is safely in the lake. Raises :class:`LockedError` if
        the table stays locked by others longer than ``lock_timeout_ms``.
        """
        from magsag.backends.postgres.retention import drop_whole_day

        await self._refresh_partitions()
        part = self._parts.get(date_day(day))
        if part is None:
            return 0
        return await drop_whole_day(self, part, require_no_running=False)

    # ------------------------------------------------- optional capabilities
    def tier_source(self) -> Any:
        from magsag.backends.postgres.tiering import PostgresTierSource

        return PostgresTierSource(self)

    async def metric_samples(
        self, metric_name: str, agent_slug: str | None, since: datetime | None, until: datetime | None
    ) -> list[tuple[str, float]]:
        w = Window.of(agent_slug, since, until)
        return await self._read(
            lambda c: extras.metric_samples(c, self.schema, metric_name, w.agent_slug, w.since_us, w.until_us),
            f"reading samples of metric {metric_name!r}",
        )

    async def day_stats(self) -> list[dict[str, Any]]:
        ev, rn, sizes = await self._read(lambda c: extras.day_stats(c, self.schema), "reading store statistics")
        return merge_days(ev, rn, sizes)

    duckdb_extensions = duck.EXTENSIONS

    def duckdb_source(self, con: Any, alias: str, mode: str = "auto") -> HotSource | None:
        return duck.source(con, self._dsn, self.schema, alias)

    def duckdb_exclusive_key(self) -> str | None:
        return None

    async def activity(self, since_us: int, buckets: Sequence[float]) -> list[list[tuple[Any, ...]]]:
        return await self._read(lambda c: extras.activity(c, self.schema, since_us, buckets), "reading activity")

    async def finished_runs(self, sel: RunSelection, after: RunKey, limit: int) -> list[dict[str, Any]]:
        rows = await self._read(lambda c: extras.finished_runs(c, self.schema, sel, after, limit), "listing runs")
        return [run_record(r) for r in rows]

    async def read_export_state(self, destination: str) -> tuple[RunKey, int] | None:
        return await self._read(lambda c: extras.read_export_state(c, self.schema, destination), "reading state")

    async def save_export_state(self, destination: str, key: RunKey, runs: int, updated_at_us: int) -> None:
        await self._read(
            lambda c: extras.save_export_state(c, self.schema, destination, key, runs, updated_at_us), "saving state"
        )

    async def export_states(self) -> list[tuple[str, RunKey, int]]:
        return await self._read(lambda c: extras.export_states(c, self.schema), "reading state")

    # ------------------------------------------------------------------- misc
    async def stats(self) -> dict[str, Any]:
        """Row counts, time range and on-disk size of the hot store."""
        s = self.schema

        async def q(c: Any) -> dict[str, Any]:
            n_ev, lo, hi = await c.fetchrow(f"SELECT count(*), min(ts), max(ts) FROM {s}.events")
            n_run = await c.fetchval(f"SELECT count(*) FROM {s}.runs")
            found = await parts_mod.list_partitions(c, s, self.partitioning or NATIVE)
            sizes = await parts_mod.partition_sizes(c, found.values())
            other = await c.fetchval(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r' "
                "AND NOT c.relispartition",
                s,
            )
            return {
                "backend": self.name,
                "dsn": self.where,
                "schema": s,
                "schema_version": self.schema_version,
                "partitioning": self.partitioning,
                "partitions": len(found),
                "events": int(n_ev),
                "runs": int(n_run),
                "oldest": iso_from_us(lo),
                "newest": iso_from_us(hi),
                "bytes": int(sum(sizes.values()) + int(other)),
                "fts": True,
            }

        return await self._read(q, "reading store statistics")
