"""Streaming a PostgreSQL tier claim's events out as canonical Arrow batches, sorted.

Two engines, same rows, same order (:data:`~magsag.backends.tiering.protocol.EVENT_SORT`, byte-wise
string order), bounded memory:

* ``duckdb`` (default when ``duckdb-extension-postgres-scanner`` is installed; it is part of
  the ``[postgres]`` extra): DuckDB's postgres extension, loaded from the package by path
  (never from the network). With a day partition (native partitioning) DuckDB scans it in
  parallel ctid ranges of 200 pages over two connections, ``seq <= seq_hi`` pushed down
  to PostgreSQL (:meth:`DuckExporter.partition_sql`); else it runs the claim's query as
  one stream (``postgres_query``). PostgreSQL sends rows with binary ``COPY``; DuckDB
  sorts them under a memory limit (spilling to a temporary folder) and streams Arrow
  batches. The partition scan is faster than ``postgres_query``, and both are faster than
  the cursor below or a sort by PostgreSQL (which spills at the default ``work_mem``);
  ``python3 bench/tier.py --backend postgres`` measures the export.
* ``asyncpg``: a server-side cursor over ``ORDER BY ... COLLATE "C"`` in a read-only
  transaction, rows turned into Arrow in Python. The fallback without the extension.

Both read with their own snapshot, after the claim committed: a claim's selection only
ever loses rows (retention), so any later snapshot yields the same rows or fewer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from magsag.backends.duckdb_ext import find_extension, new_connection
from magsag.backends.duckdb_sql import sql_string
from magsag.backends.errors import StorageError, ValidationError, redact_dsn
from magsag.backends.schema import EVENT_COLUMNS

if TYPE_CHECKING:
    import pyarrow as pa

EXPORT_ENGINES = ("duckdb", "asyncpg")
# The variable is shared with the SQLite source, whose fallback engine is "sqlite".
_ALIASES = {"native": "asyncpg", "sqlite": "asyncpg"}
SELECT_COLUMNS = ", ".join("e.payload::text AS payload" if c == "payload" else f"e.{c}" for c in EVENT_COLUMNS)
PAGES_PER_TASK = 200
_SORT_C = 'e.agent_slug COLLATE "C", e.run_id COLLATE "C", e.ts, e.event_id COLLATE "C"'


def postgres_scanner_path() -> str | None:
    """The postgres_scanner extension file matching the installed DuckDB, if the package is there."""
    return find_extension("postgres_scanner")


def choose_engine(engine: str | None) -> str:
    """The engine to use: the one asked (argument, then ``MAGSAG_TIER_EXPORT_ENGINE``), else
    ``duckdb``; ``duckdb`` falls back to ``asyncpg`` when the extension is not installed."""
    name = (engine or os.environ.get("MAGSAG_TIER_EXPORT_ENGINE") or "duckdb").strip().lower()
    name = _ALIASES.get(name, name)
    if name not in EXPORT_ENGINES:
        raise ValidationError(f"export engine must be one of {', '.join(EXPORT_ENGINES)}; got {name!r}")
    if name == "duckdb" and postgres_scanner_path() is None:
        return "asyncpg"
    return name


class DuckExporter:
    """One DuckDB connection with the PostgreSQL database attached read-only, made on first use."""

    def __init__(self, dsn: str, schema: str, *, memory_limit: str = "256MB", threads: int = 2):
        self._dsn = dsn  # may hold a password: messages go through redact_dsn
        self.schema = schema
        self.memory_limit = memory_limit
        self.threads = threads
        self._con: Any = None
        self._tmp: str | None = None

    def _connect(self) -> Any:
        if self._con is None:
            import duckdb

            self._tmp = tempfile.mkdtemp(prefix="magsag-pgtier-")
            # ATTACH by DSN looks the secret storages up: keep DuckDB's default (persistent allowed).
            settings = {"memory_limit": self.memory_limit, "temp_directory": self._tmp}
            settings["allow_persistent_secrets"] = True
            try:
                con = new_connection(self.threads, ("postgres_scanner",), config=settings)
            except (duckdb.Error, StorageError) as exc:
                raise StorageError(f"DuckDB cannot load the postgres_scanner extension: {_first(exc)}") from None
            try:
                # Smaller ctid ranges than the default 1000 pages: one day partition is read by
                # both threads over two PostgreSQL connections.
                con.execute(f"SET pg_pages_per_task = {PAGES_PER_TASK}")
                # Only the store's schema: DuckDB reads no other part of the catalog.
                schema = sql_string(self.schema)
                con.execute(f"ATTACH {sql_string(self._dsn)} AS hot (TYPE postgres, READ_ONLY, SCHEMA {schema})")
            except duckdb.Error as exc:
                con.close()
                raise StorageError(f"DuckDB cannot attach the PostgreSQL store: {_first(exc)}") from None
            self._con = con
        return self._con

    def query_sql(self, select_sql: str) -> str:
        """DuckDB SQL running ``select_sql`` (PostgreSQL SQL selecting :data:`SELECT_COLUMNS`)
        in PostgreSQL as one stream."""
        return f"SELECT * FROM postgres_query('hot', {sql_string(select_sql)})"

    def partition_sql(self, table: str, seq_hi: int, excluded: list[str], covered: list[tuple[int, list[str]]]) -> str:
        """DuckDB SQL scanning one day partition (``table``, unqualified) in parallel ctid
        ranges: ``seq <= seq_hi`` is pushed down to PostgreSQL; the run lists and the
        finished claims a copy skips (``(seq_hi, excluded runs)`` each) filter in DuckDB."""
        where = f"seq <= {int(seq_hi)}"
        if excluded:
            where += f" AND run_id NOT IN ({_text_list(excluded)})"
        for hi, runs in covered:
            keep = f"seq > {int(hi)}"
            if runs:
                keep += f" OR run_id IN ({_text_list(runs)})"
            where += f" AND ({keep})"
        cols = ", ".join("CAST(payload AS VARCHAR) AS payload" if c == "payload" else c for c in EVENT_COLUMNS)
        return f"SELECT {cols} FROM hot.{self.schema}.{table} WHERE {where}"

    def batches(self, source_sql: str, batch_rows: int, what: str) -> Iterator[pa.RecordBatch]:
        """Sort the rows of ``source_sql`` (:meth:`query_sql` or :meth:`partition_sql`) in
        DuckDB and yield canonical batches. A generator: run it in a thread."""
        import duckdb
        import pyarrow as pa
        from magsag.backends.schema import event_arrow_schema

        schema = event_arrow_schema()
        ts_type = schema.field("ts").type
        sql = f"SELECT * FROM ({source_sql}) ORDER BY agent_slug, run_id, ts, event_id"
        try:
            con = self._connect()
            con.execute("CALL pg_clear_cache()")  # partitions come and go: read the catalog again
            reader = con.execute(sql).to_arrow_reader(batch_rows)
            for batch in reader:
                arrays = [
                    col.cast(ts_type) if name == "ts" else col
                    for name, col in zip(batch.schema.names, batch.columns, strict=True)
                ]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        except duckdb.Error as exc:
            raise StorageError(f"{what}: {_first(exc)}") from None

    def close(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(Exception):
                con.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


async def cursor_batches(conn: Any, select_sql: str, batch_rows: int) -> AsyncIterator[pa.RecordBatch]:
    """The asyncpg engine: ``select_sql`` sorted by PostgreSQL, fetched ``batch_rows`` at a time
    through a server-side cursor (``conn`` is a pooled connection: ts as int microseconds)."""
    from magsag.backends.arrow import events_table

    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # One FETCH may sort a whole day: no statement timeout, room to sort in memory.
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SET LOCAL work_mem = '64MB'")
        cur = await conn.cursor(f"{select_sql} ORDER BY {_SORT_C}")
        while rows := await cur.fetch(batch_rows):
            for batch in events_table(rows).to_batches(max_chunksize=batch_rows):
                yield batch


def _text_list(values: list[str]) -> str:
    return ", ".join(sql_string(v) for v in values)


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact_dsn(lines[0]) if lines else type(exc).__name__
