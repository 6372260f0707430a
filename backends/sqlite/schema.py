"""DDL and versioned migrations of the SQLite hot store.

``PRAGMA user_version`` records the schema version; :func:`migrate` brings any older
file up to :data:`SQLITE_SCHEMA_VERSION` step by step, each step in its own transaction,
so running ``init`` twice, or on an older file, is safe.

The full-text index (FTS5, external content over ``events.msg``) is maintained by the
writer in the same transaction as the rows it indexes: one ``INSERT ... SELECT`` per
batch instead of a per-row trigger, which is faster (``bench/ingest.py --backend sqlite``
measures ingest). All writes go through the backend, so the index never drifts;
``rebuild_fts`` repairs a file that other tools wrote to.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable

from magsag.backends.schema import EVENT_COLUMNS

SQLITE_SCHEMA_VERSION = 2

EVENT_INSERT = (
    f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)
# Journaled single appends: their rows are JSON text already (the journal's lines), so
# one statement takes the whole group as a JSON array of arrays and SQLite parses it in
# C without the GIL, which the application's thread, busy appending, needs meanwhile.
EVENT_INSERT_JSON = (
    f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}) "
    f"SELECT {', '.join(f'value ->> {i}' for i in range(len(EVENT_COLUMNS)))} FROM json_each(?)"
)

# Batches: multi-row VALUES statements, rows flattened into one parameter list. The
# sqlite3 module binds the whole list in C and runs the statement in one step, so the
# writer thread takes the GIL twice per statement, not around every row as executemany
# does (which starves the writer whenever the application's own thread is busy), and
# SQLite parses no JSON (a ``json_each`` statement per batch cost nearly twice the CPU
# per row, see docs/backends.md). Sizes are powers of two, so a handful of statements,
# each prepared once, serves every batch.
_EVENT_MARKS = "(" + ", ".join("?" * len(EVENT_COLUMNS)) + ")"


@functools.cache
def event_insert_values(rows: int) -> str:
    """``INSERT OR IGNORE`` of ``rows`` events (13 parameters per row, in column order)."""
    return f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}) VALUES " + ", ".join([_EVENT_MARKS] * rows)


EVENT_SELECT = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)

_V1 = """
CREATE TABLE IF NOT EXISTS magsag_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS runs (
    run_id        TEXT PRIMARY KEY,
    agent_slug    TEXT NOT NULL,
    parent_run_id TEXT,
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'canceled')),
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    metrics       TEXT NOT NULL DEFAULT '{}',
    tags          TEXT NOT NULL DEFAULT '[]'
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_agent_started ON runs (agent_slug, started_at);
CREATE INDEX IF NOT EXISTS runs_status_started ON runs (status, started_at);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    ts               INTEGER NOT NULL,
    run_id           TEXT NOT NULL,
    agent_slug       TEXT NOT NULL,
    type             TEXT NOT NULL,
    level            TEXT,
    msg              TEXT,
    payload          TEXT NOT NULL DEFAULT '{}',
    span_id          TEXT,
    parent_span_id   TEXT,
    contract_id      TEXT,
    contract_version TEXT,
    artifact_uri     TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS events_run_ts ON events (run_id, ts);
CREATE INDEX IF NOT EXISTS events_agent_ts ON events (agent_slug, ts);
CREATE INDEX IF NOT EXISTS events_type_ts ON events (type, ts);
CREATE INDEX IF NOT EXISTS events_span ON events (span_id) WHERE span_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
"""

# v2: the tiering ledger (claims of day partitions being moved to the lake, and what
# has been archived where). See backends/sqlite/tiering.py.
_V2 = """
CREATE TABLE IF NOT EXISTS tier_batches (
    batch_id      TEXT PRIMARY KEY,
    dest          TEXT NOT NULL,
    day           TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('move', 'copy')),
    state         TEXT NOT NULL CHECK (state IN ('claimed', 'exported', 'done')),
    seq_lo        INTEGER NOT NULL,
    seq_hi        INTEGER NOT NULL,
    excluded_runs TEXT NOT NULL DEFAULT '[]',
    run_ids       TEXT NOT NULL DEFAULT '[]',
    event_rows    INTEGER,
    run_rows      INTEGER,
    info          TEXT NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS tier_batches_state ON tier_batches (state, dest);
CREATE INDEX IF NOT EXISTS tier_batches_day ON tier_batches (dest, day, mode);
"""

FTS_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5("
    "msg, content='events', content_rowid='seq', tokenize='unicode61 remove_diacritics 2')"
)


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run statements one by one (``executescript`` would commit the open transaction)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            conn.execute(pending)
            pending = ""


_STEPS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: lambda c: _run_script(c, _V1),
    2: lambda c: _run_script(c, _V2),
}


def fts5_available(conn: sqlite3.Connection) -> bool:
    """Probe FTS5 by creating a virtual table (there is no fts5_version() function)."""
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.magsag_fts5_probe USING fts5(x)")
        conn.execute("DROP TABLE temp.magsag_fts5_probe")
        return True
    except sqlite3.OperationalError:
        return False


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


def migrate(conn: sqlite3.Connection) -> int:
    """Create or upgrade the schema; return the version found before."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SQLITE_SCHEMA_VERSION:
        from magsag.backends.errors import ConfigError

        raise ConfigError(
            f"the SQLite store has schema version {found}, newer than this magsag "
            f"({SQLITE_SCHEMA_VERSION}); upgrade magsag"
        )
    if found == 0 and not has_table(conn, "events"):
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only effective before the first table
    for version in range(found + 1, SQLITE_SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            _STEPS[version](conn)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute(
                "INSERT INTO magsag_meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found


def set_fts(conn: sqlite3.Connection, enabled: bool) -> bool:
    """Create (and fill) or drop the FTS index; return whether it is enabled."""
    present = has_table(conn, "events_fts")
    if enabled and not present:
        if not fts5_available(conn):
            return False
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(FTS_DDL)
        conn.execute("INSERT INTO events_fts (events_fts) VALUES ('rebuild')")
        conn.execute("COMMIT")
    elif not enabled and present:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DROP TABLE events_fts")
        conn.execute("COMMIT")
    return enabled


def rebuild_fts(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO events_fts (events_fts) VALUES ('rebuild')")
