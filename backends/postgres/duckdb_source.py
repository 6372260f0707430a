"""The PostgreSQL store's ``duckdb_source`` capability: its schema attached read-only to DuckDB.

The password lives in a DuckDB secret (redacted in ``duckdb_secrets()``), never in the
ATTACH string; the views read the partitioned ``events`` and ``runs`` through
``postgres_scanner``.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from magsag.backends.capabilities import HotSource
from magsag.backends.duckdb_ext import load_extension
from magsag.backends.duckdb_sql import sql_string
from magsag.backends.errors import BackendUnavailable, StorageError, redact_dsn
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS

if TYPE_CHECKING:
    import duckdb

EXTENSIONS = ("postgres_scanner",)


def attach(con: duckdb.DuckDBPyConnection, dsn: str, schema: str, alias: str) -> None:
    """ATTACH a PostgreSQL schema read-only; the password lives in a (redacted) secret.

    The DSN goes through the one parser of both connection paths
    (:func:`magsag.backends.postgres.conn.pg_params`): every parameter it accepts
    (``sslmode``, ``host=/socket/dir``, ...) reaches libpq, none is dropped.
    """
    from magsag.backends.postgres.conn import pg_params

    load_extension(con, "postgres_scanner")
    params = pg_params(dsn)
    secret = {"host": "HOST", "port": "PORT", "user": "USER", "password": "PASSWORD", "dbname": "DATABASE"}
    opts = [f"{secret[k]} {int(v) if k == 'port' else sql_string(v)}" for k, v in params.items() if k in secret]
    con.execute(f"CREATE OR REPLACE SECRET magsag_pg (TYPE postgres{''.join(', ' + o for o in opts)})")
    # Everything but the password also goes in the connection string, where libpq reads it.
    conninfo = " ".join(f"{k}={_libpq_value(v)}" for k, v in params.items() if k != "password")
    con.execute(
        f"ATTACH {sql_string(conninfo)} AS {alias} (TYPE postgres, SECRET magsag_pg, READ_ONLY, "
        f"SCHEMA {sql_string(schema)})"
    )


def _libpq_value(value: str) -> str:
    """A libpq connection-string value: quoted, with ``\\`` and ``'`` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
