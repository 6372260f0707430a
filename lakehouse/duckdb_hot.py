"""Hot stores attached to a DuckDB query connection, read-only (SQLite file, PostgreSQL schema).

Kept apart from the lake's access: this is the part that becomes a hot-store capability.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magsag.backends.duckdb_ext import load_extension
from magsag.backends.duckdb_sql import sql_string

if TYPE_CHECKING:
    import duckdb


def attach_postgres(con: duckdb.DuckDBPyConnection, dsn: str, schema: str, alias: str) -> None:
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


def attach_sqlite(con: duckdb.DuckDBPyConnection, path: str, alias: str) -> None:
    """ATTACH a SQLite file read-only."""
    load_extension(con, "sqlite_scanner")
    con.execute(f"ATTACH {sql_string(path)} AS {alias} (TYPE sqlite, READ_ONLY)")
