"""DuckDB connections for the query layer: extensions from installed packages, lake access.

Extensions that are not built into the ``duckdb`` wheel (``httpfs``, ``sqlite_scanner``,
``postgres_scanner``) come from the ``duckdb-extension-*`` pip packages and are loaded
by file path: DuckDB never downloads anything, never autoloads, and keeps its extension
directory in a private temporary folder instead of the user's ``~/.duckdb``.

An ``s3://`` lake is read natively by httpfs with a secret built from the settings (the
secret is redacted by DuckDB and never printed by us); any other fsspec protocol is
reached through ``register_filesystem``.
"""

from __future__ import annotations

import importlib.util
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from backends.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

    from lakehouse.objstore import Lake

_PACKAGES = {
    "httpfs": ("duckdb_extension_httpfs", "s3"),
    "sqlite_scanner": ("duckdb_extension_sqlite_scanner", None),
    "postgres_scanner": ("duckdb_extension_postgres_scanner", "postgres"),
}


@cache
def _private_extension_dir() -> str:
    return tempfile.mkdtemp(prefix="magsag-duckdb-ext-")


def duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


@cache
def extension_path(name: str) -> str:
    """File of an extension shipped by its pip package, for this DuckDB version."""
    package, extra = _PACKAGES[name]
    spec = importlib.util.find_spec(package)
    hint = f"pip install 'magsag-storage[{extra}]'" if extra else f"pip install {package.replace('_', '-')}"
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the DuckDB {name} extension is not installed ({hint})")
    version = duckdb_version()
    for base in spec.submodule_search_locations:
        path = Path(base) / "extensions" / f"v{version}" / f"{name}.duckdb_extension"
        if path.is_file():
            return str(path)
    raise ConfigError(f"the installed {package} does not match DuckDB {version} ({hint}=={version})")


def new_connection(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that never installs or autoloads anything, in UTC."""
    import duckdb

    config: dict[str, Any] = {
        "extension_directory": _private_extension_dir(),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_persistent_secrets": False,
        "python_enable_replacements": False,
    }
    if threads:
        config["threads"] = threads
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET TimeZone = 'UTC'")  # icu is built into the wheel
    return con


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.execute(f"LOAD {sql_string(extension_path(name))}")


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: list[str]) -> str:
    return "[" + ", ".join(sql_string(v) for v in values) + "]"


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
    load_extension(con, "sqlite_scanner")
    con.execute(f"ATTACH {sql_string(path)} AS {alias} (TYPE sqlite, READ_ONLY)")


def lock_down(con: duckdb.DuckDBPyConnection, allowed_dirs: list[str], allowed_paths: list[str] = ()) -> None:  # type: ignore[assignment]
    """No file or network access beyond ``allowed_dirs``; no later configuration change."""
    dirs = [d if d.endswith("/") else d + "/" for d in allowed_dirs]
    if dirs:
        con.execute(f"SET allowed_directories = {sql_list(dirs)}")
    if allowed_paths:
        con.execute(f"SET allowed_paths = {sql_list(list(allowed_paths))}")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
