"""The PostgreSQL store's ``duckdb_source`` capability: its schema attached read-only to DuckDB.

The password lives in a DuckDB secret (redacted in ``duckdb_secrets()``), never in the
ATTACH string; the views read the partitioned ``events`` and ``runs`` through
``postgres_scanner``.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from magsag.backends.capabilities import HotSource
from magsag.backends.duckdb_ext import load_extension
from magsag.backends.duckdb_sql import sql_string
from magsag.backends.errors import BackendUnavailable, ConfigError, StorageError, redact_dsn
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS

if TYPE_CHECKING:
    import duckdb

EXTENSIONS = ("postgres_scanner",)


def attach(con: duckdb.DuckDBPyConnection, dsn: str, schema: str, alias: str) -> None:
    """ATTACH a PostgreSQL schema read-only; the password lives in a (redacted) secret."""
    load_extension(con, "postgres_scanner")
    try:
        u = urlsplit(dsn.strip())
        port = u.port
    except ValueError:
        raise ConfigError("MAGSAG_STORAGE_DSN is not a valid URL") from None
    opts = []
    if u.hostname:
        opts.append(f"HOST {sql_string(u.hostname)}")
    if port:
        opts.append(f"PORT {int(port)}")
    if u.username:
        opts.append(f"USER {sql_string(unquote(u.username))}")
    if u.password:
        opts.append(f"PASSWORD {sql_string(unquote(u.password))}")
    db = unquote(u.path.lstrip("/"))
    if db:
        opts.append(f"DATABASE {sql_string(db)}")
    con.execute(f"CREATE OR REPLACE SECRET magsag_pg (TYPE postgres{''.join(', ' + o for o in opts)})")
    con.execute(f"ATTACH '' AS {alias} (TYPE postgres, SECRET magsag_pg, READ_ONLY, SCHEMA {sql_string(schema)})")


def attached_source(con: duckdb.DuckDBPyConnection, schema: str, alias: str) -> HotSource:
    """Views over the schema attached as ``alias``."""
    t = f"{alias}.{schema}"
    ev = (
        ", ".join("payload::VARCHAR AS payload" if c == "payload" else c for c in EVENT_COLUMNS)
        + ", CAST(timezone('UTC', ts) AS DATE) AS dt"
    )
    runs = (
        ", ".join(
            "metrics::VARCHAR AS metrics" if c == "metrics" else "tags::VARCHAR[] AS tags" if c == "tags" else c
            for c in RUN_COLUMNS
        )
        + ", CAST(timezone('UTC', started_at) AS DATE) AS dt"
    )
    q = (
        f"SELECT (SELECT (min(ts) AT TIME ZONE 'UTC')::date::text FROM {schema}.events) AS ev, "
        f"(SELECT (min(started_at) AT TIME ZONE 'UTC')::date::text FROM {schema}.runs) AS run"
    )
    row = con.execute(f"SELECT * FROM postgres_query({sql_string(alias)}, {sql_string(q)})").fetchone()
    lo_ev, lo_run = (date.fromisoformat(v) if v else None for v in (row or (None, None)))
    return HotSource("postgres", f"SELECT {ev} FROM {t}.events", f"SELECT {runs} FROM {t}.runs", lo_ev, lo_run)


def source(con: duckdb.DuckDBPyConnection, dsn: str, schema: str, alias: str) -> HotSource:
    """Attach and describe; failures as one line without the password."""
    try:
        attach(con, dsn, schema, alias)
        return attached_source(con, schema, alias)
    except StorageError:
        raise
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise BackendUnavailable(f"cannot read the PostgreSQL store: {redact_dsn(first)}") from None
