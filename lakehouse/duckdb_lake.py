"""Lake access for DuckDB: make ``lake.uri(...)`` paths readable on a connection.

An ``s3://`` lake is read natively by httpfs with a secret (redacted by DuckDB, never
printed by us); any other fsspec protocol is reached through ``register_filesystem``;
a local lake needs nothing.

The secret's credentials: the explicit ``MAGSAG_STORAGE_S3_*`` ones as given; otherwise
DuckDB's ``credential_chain`` provider (the ``aws`` extension from the
``duckdb-extension-aws`` package: environment, ``AWS_PROFILE`` and the shared files, SSO,
instance roles; checked offline against a loopback endpoint). Without that extension the
credentials botocore's chain resolves now are passed instead, session token included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from magsag.backends.duckdb_ext import find_extension, load_extension
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
        import duckdb

        load_extension(con, "httpfs")
        try:
            con.execute(f"CREATE OR REPLACE SECRET magsag_lake ({', '.join(s3_secret_parts(con, lake))})")
        except duckdb.Error:
            if lake.s3.explicit or find_extension("aws") is None:
                raise
            # The chain found nothing (a public bucket): what botocore resolves, or anonymous.
            parts = s3_secret_parts(con, lake, chain=False)
            con.execute(f"CREATE OR REPLACE SECRET magsag_lake ({', '.join(parts)})")
        return
    con.register_filesystem(lake.fs)


def s3_secret_parts(con: duckdb.DuckDBPyConnection, lake: Lake, *, chain: bool = True) -> list[str]:
    """The options of the lake's S3 secret (credentials, region, endpoint, URL style)."""
    s3 = lake.s3
    assert s3 is not None
    parts = ["TYPE s3"]
    if chain and not s3.explicit and find_extension("aws") is not None:
        load_extension(con, "aws")
        parts += ["PROVIDER credential_chain", "REFRESH auto"]
    else:
        creds = s3.credentials()
        if creds is not None:
            parts += [f"KEY_ID {sql_string(creds.key)}", f"SECRET {sql_string(creds.secret)}"]
            if creds.token:
                parts.append(f"SESSION_TOKEN {sql_string(creds.token)}")
    parts += [f"REGION {sql_string(s3.region)}"]
    if s3.endpoint_url:
        ep = urlsplit(s3.endpoint_url)
        host = ep.netloc or ep.path
        parts += ["URL_STYLE 'path'", f"ENDPOINT {sql_string(host)}"]
        parts.append(f"USE_SSL {'false' if ep.scheme == 'http' else 'true'}")
    else:
        parts.append("URL_STYLE 'vhost'")
    return parts
