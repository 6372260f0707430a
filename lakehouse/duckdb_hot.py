"""Hot stores attached to a DuckDB query connection, read-only (SQLite file, PostgreSQL schema).

Kept apart from the lake's access: this is the part that becomes a hot-store capability.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from magsag.backends.duckdb_ext import load_extension
from magsag.backends.duckdb_sql import sql_string
from magsag.backends.errors import ConfigError

if TYPE_CHECKING:
    import duckdb


def attach_postgres(con: duckdb.DuckDBPyConnection, dsn: str, schema: str, alias: str) -> None:
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


def attach_sqlite(con: duckdb.DuckDBPyConnection, path: str, alias: str) -> None:
    """ATTACH a SQLite file read-only."""
    load_extension(con, "sqlite_scanner")
    con.execute(f"ATTACH {sql_string(path)} AS {alias} (TYPE sqlite, READ_ONLY)")
