"""Lake access for DuckDB: make ``lake.uri(...)`` paths readable on a connection.

An ``s3://`` lake is read natively by httpfs with a secret (redacted by DuckDB, never
printed by us); any other fsspec protocol is reached through ``register_filesystem``;
a local lake needs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from magsag.backends.duckdb_ext import load_extension
from magsag.backends.duckdb_sql import sql_string

if TYPE_CHECKING:
    import duckdb
    from magsag.lakehouse.objstore import Lake


def lake_extensions(lake: Lake) -> tuple[str, ...]:
    """Extensions a connection needs to read ``lake``."""
    return ("httpfs",) if lake.protocol == "s3" and lake.s3 is not None else ()


def attach_lake(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Make ``lake.uri(...)`` paths readable on ``con`` (httpfs + secret, or fsspec)."""
    if lake.is_local:
        return
    if lake.protocol == "s3" and lake.s3 is not None:
        load_extension(con, "httpfs")
        s3 = lake.s3
        parts = ["TYPE s3", f"REGION {sql_string(s3.region)}", "URL_STYLE 'path'"]
        if s3.key is not None:
            parts += [f"KEY_ID {sql_string(s3.key)}", f"SECRET {sql_string(s3.secret or '')}"]
        if s3.endpoint_url:
            ep = urlsplit(s3.endpoint_url)
            host = ep.netloc or ep.path
            parts += [f"ENDPOINT {sql_string(host)}", f"USE_SSL {'false' if ep.scheme == 'http' else 'true'}"]
        else:
            parts[2] = "URL_STYLE 'vhost'"
        con.execute(f"CREATE OR REPLACE SECRET magsag_lake ({', '.join(parts)})")
        return
    con.register_filesystem(lake.fs)
