"""The SQLite store's ``duckdb_source`` capability: read by DuckDB, never two SQLites on one file.

DuckDB's sqlite_scanner carries its own copy of the SQLite library. Two copies in one
process do not see each other's POSIX locks: when one closes the file it drops the
other's locks, and may take itself for the last user and truncate the WAL index the
other has mapped (a bus error, or a corrupt read). So the views read SQLite in one of
two ways:

* ``attach`` (the default): DuckDB attaches the file read-only and reads it at query
  time. The scanner passes SQLite no filter: every query over the hot branch reads the
  whole table (cheap when it is empty, growing with its size otherwise) and SQLite's
  indexes go unused. Used when nothing else in this process has the file open, e.g.
  ``magsag data sql`` or a notebook that only queries.
* ``snapshot``: Python's own ``sqlite3`` (the copy the hot-store backend uses) reads the
  rows once, when the query connection is made or refreshed,
  and DuckDB scans them as Arrow. Used when this process already has the store open
  (checked through ``/proc/self/fd``), e.g. a notebook that also writes through
  ``magsag.storage``; the store's :meth:`duckdb_exclusive_key` tells the query layer which
  attached connections of this process to switch to it before the store opens itself.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from magsag.backends.arrow import events_table, runs_table
from magsag.backends.capabilities import HotSource
from magsag.backends.duckdb_ext import load_extension
from magsag.backends.duckdb_sql import sql_string
from magsag.backends.errors import BackendUnavailable, ConfigError, StorageError
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS, day_of_us

if TYPE_CHECKING:
    import duckdb

SNAPSHOT_EVENTS = "magsag_hot_events_snapshot"
SNAPSHOT_RUNS = "magsag_hot_runs_snapshot"


def open_in_process(path: Path) -> bool:
    """Whether this process has the database (or its -wal/-shm) open already."""
    target = str(path.resolve())
    names = {target, f"{target}-wal", f"{target}-shm"}
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:  # no procfs: assume the worst when the hot-store backend is loaded
        return "magsag.backends.sqlite.store" in sys.modules
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") in names:
                return True
        except OSError:
            continue
    return False


EXTENSIONS = ("sqlite_scanner",)
MODES = ("auto", "attach", "snapshot")


def source(con: duckdb.DuckDBPyConnection, path: Path, alias: str, mode: str = "auto") -> HotSource | None:
    """The store at ``path`` readable on ``con``; None when the file does not exist yet."""
    if mode not in MODES:
        raise ConfigError(f"sqlite_mode must be auto, attach or snapshot, got {mode!r}")
    if not path.is_file():
        return None  # nothing stored yet; never create the file here
    if mode == "auto":
        mode = "snapshot" if open_in_process(path) else "attach"
    if mode == "snapshot":
        return snapshot_source(con, path)
    try:
        load_extension(con, "sqlite_scanner")
        con.execute(f"ATTACH {sql_string(str(path.resolve()))} AS {alias} (TYPE sqlite, READ_ONLY)")
        return attach_source(con, alias, path)
    except StorageError:
        raise
    except Exception as exc:
        text = str(exc).strip()
        raise BackendUnavailable(
            f"cannot read the SQLite store {path}: {text.splitlines()[0] if text else type(exc).__name__}"
        ) from None


def exclusive_key(path: Path) -> str:
    return f"sqlite:{path.expanduser().resolve()}"


def attach_source(con: duckdb.DuckDBPyConnection, alias: str, path: Path) -> HotSource:
    """Views over the file DuckDB attached as ``alias``."""
    ev = (
        ", ".join("make_timestamp(ts)::TIMESTAMPTZ AS ts" if c == "ts" else c for c in EVENT_COLUMNS)
        + ", CAST(make_timestamp(ts) AS DATE) AS dt"
    )
    run_cols = []
    for c in RUN_COLUMNS:
        if c in ("started_at", "ended_at"):
            run_cols.append(f"make_timestamp({c}::BIGINT)::TIMESTAMPTZ AS {c}")
        elif c == "tags":
            run_cols.append("from_json(tags::VARCHAR, '[\"VARCHAR\"]') AS tags")
        else:
            run_cols.append(f"{c}::VARCHAR AS {c}")
    runs = ", ".join(run_cols) + ", CAST(make_timestamp(started_at::BIGINT) AS DATE) AS dt"
    oldest = sql_string("SELECT (SELECT min(ts) FROM events), (SELECT min(started_at) FROM runs)")
    row = con.execute(f"SELECT * FROM sqlite_query({sql_string(alias)}, {oldest})").fetchone() or (None, None)
    lo_ev, lo_run = (day_of_us(int(v)) if v is not None else None for v in row)
    run_query = sql_string("SELECT " + ", ".join(RUN_COLUMNS) + " FROM runs")
    return HotSource(
        "sqlite",
        f"SELECT {ev} FROM {alias}.events",
        # runs is a WITHOUT ROWID table, which the scanner cannot scan: SQLite reads it.
        f"SELECT {runs} FROM sqlite_query({sql_string(alias)}, {run_query})",
        lo_ev,
        lo_run,
        reread=lambda c: snapshot_source(c, path),
        exclusive_key=exclusive_key(path),
    )


def snapshot_source(con: duckdb.DuckDBPyConnection, path: Path) -> HotSource:
    """Read the hot rows with Python's sqlite3 now and register them with DuckDB as Arrow."""
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise BackendUnavailable(f"cannot read the SQLite store {path}: {exc}") from None
    try:
        conn.execute("PRAGMA query_only = 1")
        ev_rows = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events").fetchall()
        run_rows = conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs").fetchall()
    except sqlite3.Error as exc:
        raise BackendUnavailable(f"cannot read the SQLite store {path}: {exc}") from None
    finally:
        conn.close()
    con.register(SNAPSHOT_EVENTS, events_table(ev_rows))
    con.register(SNAPSHOT_RUNS, runs_table(run_rows))
    ts = EVENT_COLUMNS.index("ts")
    lo_ev = day_of_us(min(r[ts] for r in ev_rows)) if ev_rows else None
    st = RUN_COLUMNS.index("started_at")
    lo_run = day_of_us(min(r[st] for r in run_rows)) if run_rows else None
    return HotSource(
        "sqlite",
        f"SELECT {', '.join(EVENT_COLUMNS)}, CAST(timezone('UTC', ts) AS DATE) AS dt FROM {SNAPSHOT_EVENTS}",
        f"SELECT {', '.join(RUN_COLUMNS)}, CAST(timezone('UTC', started_at) AS DATE) AS dt FROM {SNAPSHOT_RUNS}",
        lo_ev,
        lo_run,
        mode="snapshot",
        reread=lambda c: snapshot_source(c, path),
    )
