"""One DuckDB connection over every tier: :func:`connect` and read-only SQL (:func:`run_sql`).

>>> con = connect()                                              # doctest: +SKIP
>>> con.sql("SELECT tier, count(*) FROM events GROUP BY 1").show()  # doctest: +SKIP

Views (see docs/query.md): ``events`` and ``runs`` (hot + lake, each row once, with a
``tier`` column of 'hot' or 'lake'), ``lake_events``/``lake_runs`` and
``hot_events``/``hot_runs`` (one tier each), and the conveniences ``mcp_calls``,
``metrics``, ``costs`` (the legacy cost ledger) and ``run_summary``. Every view has a
``dt`` DATE column (the UTC day); filtering on it prunes lake files.

Views are made from the lake's live files when :func:`connect` runs. A connection kept
open while tiering or compaction runs should call :func:`refresh` (cheap) to see the
new files.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from magsag.backends.capabilities import HotSource, has
from magsag.backends.duckdb_ext import new_connection
from magsag.backends.errors import ConfigError, QueryError, redact_dsn
from magsag.lakehouse import views
from magsag.lakehouse.duckdb_lake import attach_lake, lake_extensions
from magsag.lakehouse.lakefiles import LakeSnapshot, SnapshotReader
from magsag.lakehouse.objstore import Lake, open_lake
from magsag.lakehouse.sqlguard import LockedConnection, lock_down, raw_of

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    from magsag.backends.base import StorageBackend
    from magsag.lakehouse.settings import StorageSettings


@dataclass
class _Context:
    lake: Lake
    reader: SnapshotReader
    hot: HotSource
    snapshot: LakeSnapshot
    boundaries: dict[str, date | None]
    locked: bool
    settings: StorageSettings


# Keyed weakly by connection: a connection dropped without close() leaves nothing behind.
_contexts: weakref.WeakKeyDictionary[Any, _Context] = weakref.WeakKeyDictionary()
_contexts_lock = threading.Lock()


def _hot_store(settings: StorageSettings) -> StorageBackend:
    """The configured hot store, built but not opened (the views never write to it)."""
    from magsag.lakehouse.settings import backend_from_settings

    return backend_from_settings(settings)


def _attach_hot(con: duckdb.DuckDBPyConnection, store: StorageBackend | None, mode: str) -> HotSource:
    if store is None:
        return views.no_hot_source()
    if not has(store, "duckdb_source"):
        raise ConfigError(
            f"the query views read hot stores with the 'duckdb_source' capability; the {store.name} backend "
            "does not declare it; pass include_hot=False to query the lake alone"
        )
    return store.duckdb_source(con, views.HOT, mode) or views.no_hot_source()  # type: ignore[attr-defined]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(
    settings: StorageSettings | None = None,
    *,
    lake_url: str | None = None,
    include_hot: bool = True,
    locked: bool = False,
    threads: int | None = None,
    sqlite_mode: str = "auto",
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views over the hot store and the lake.

    ``locked=True`` (what ``magsag data sql`` uses) then disables every file and network
    access outside the lake and freezes the configuration, so the connection can run
    untrusted read-only SQL (see :func:`run_sql`). ``sqlite_mode`` chooses how a hot store
    that can be either attached or snapshotted is read (the store's ``duckdb_source``
    capability): ``auto`` attaches it unless this process has it open already, then it
    takes a snapshot.
    """
    if settings is None:
        from magsag.lakehouse.settings import load_settings

        settings = load_settings()
    lake = open_lake(lake_url or settings.lake_url, settings)
    store = _hot_store(settings) if include_hot else None
    hot_ext = (
        tuple(getattr(store, "duckdb_extensions", ())) if store is not None and has(store, "duckdb_source") else ()
    )
    con = new_connection(threads, lake_extensions(lake) + hot_ext)
    snap = None
    try:
        attach_lake(con, lake)
        hot = _attach_hot(con, store, sqlite_mode)
        reader = SnapshotReader(lake)
        snap = reader.snapshot()
        cuts = views.create_views(con, hot, snap)
        if locked:
            from magsag.lakehouse.sqlrun import limit_resources

            limit_resources(con, memory_limit=settings.sql_memory_limit, threads=settings.sql_threads)
            lock_down(con, [lake.uri()])
    except BaseException as exc:
        con.close()
        if snap is not None and isinstance(exc, Exception):
            from magsag.lakehouse.lakecheck import diagnose

            diagnose(lake, [f for fs in snap.files.values() for f in fs], exc)  # name a damaged file
        raise
    if locked:  # every statement through it passes the guard (lakehouse/sqlguard.py)
        con = LockedConnection(con)  # type: ignore[assignment]
    with _contexts_lock:
        _contexts[con] = _Context(lake, reader, hot, snap, cuts, locked, settings)
    return con


def refresh(con: duckdb.DuckDBPyConnection) -> bool:
    """Re-read the lake's file list and remake the views; return whether anything changed."""
    ctx = _contexts.get(con)
    if ctx is None:
        raise QueryError("refresh() needs a connection made by magsag.lakehouse.connect()")
    snap = ctx.reader.snapshot()
    raw = raw_of(con)
    if ctx.hot.mode == "snapshot" and ctx.hot.reread is not None:
        ctx.hot = ctx.hot.reread(raw)
    elif snap.key() == ctx.snapshot.key():
        return False
    ctx.boundaries = views.create_views(raw, ctx.hot, snap)
    ctx.snapshot = snap
    return True


def release(key: str | None) -> int:
    """Switch this process's connections whose hot source has ``exclusive_key`` ``key`` to snapshots.

    Called before this process opens that store itself (a store's ``duckdb_exclusive_key``
    capability names what its attachments must give up); returns how many were switched.
    """
    if key is None:
        return 0
    switched = 0
    with _contexts_lock:
        items = list(_contexts.items())
    for con, ctx in items:
        if ctx.hot.mode != "attach" or ctx.hot.exclusive_key != key or ctx.hot.reread is None:
            continue
        raw = raw_of(con)
        ctx.hot = ctx.hot.reread(raw)
        ctx.boundaries = views.create_views(raw, ctx.hot, ctx.snapshot)
        raw.execute(f"DETACH {views.HOT}")
        switched += 1
    return switched


def snapshot_of(con: duckdb.DuckDBPyConnection) -> LakeSnapshot:
    """The lake files the connection's views read."""
    ctx = _contexts.get(con)
    if ctx is None:
        raise QueryError("not a connection made by magsag.lakehouse.connect()")
    return ctx.snapshot


def run_sql(
    sql: str,
    settings: StorageSettings | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    max_rows: int | None = None,
) -> pa.Table:
    """Run one read-only SELECT over the views; refuse anything else with a one-line QueryError.

    Bounded (lakehouse/sqlrun.py): at most ``max_rows`` rows are read (streamed, the
    query stops there), the statement is interrupted after ``sql_timeout_s`` and on
    Ctrl-C, and a connection made here has ``sql_memory_limit`` and ``sql_threads``.
    """
    from magsag.lakehouse.sqlguard import check_sql
    from magsag.lakehouse.sqlrun import bounded

    own = con is None
    if con is None:
        if settings is None:
            from magsag.lakehouse.settings import load_settings

            settings = load_settings()
        con = connect(settings, locked=True)
    timeout = getattr(settings, "sql_timeout_s", None) if settings is not None else None
    try:
        check_sql(raw_of(con), sql)
        try:
            return bounded(raw_of(con), sql, max_rows=max_rows, timeout=timeout)[0]
        except QueryError:
            raise
        except Exception as exc:
            ctx = _contexts.get(con)
            message = _sql_error(exc)
            if ctx is not None:
                from magsag.lakehouse.lakecheck import diagnose
                from magsag.lakehouse.lakeread import scrub

                diagnose(ctx.lake, [f for fs in ctx.snapshot.files.values() for f in fs], exc)

                message = scrub(ctx.lake, message)
            raise QueryError(message) from None
    finally:
        if own:
            close(con)


def _sql_error(exc: BaseException) -> str:
    text = redact_dsn(_first_line(exc))
    if "file system operations are disabled" in text or "external access" in text.lower():
        return f"refused: {text} (data sql reads the views, not other files)"
    return text


def close(con: duckdb.DuckDBPyConnection) -> None:
    with _contexts_lock:
        _contexts.pop(con, None)
    con.close()


def arrow_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows of an Arrow result as dicts (timestamps as ISO-8601 strings, dates as YYYY-MM-DD)."""
    out = table.to_pylist()
    for row in out:
        for k, v in row.items():
            if hasattr(v, "isoformat"):
                row[k] = v.isoformat()
    return out
