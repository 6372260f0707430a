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

import contextlib
import importlib.util
import json
import os
import stat
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from magsag.backends.errors import ConfigError

if TYPE_CHECKING:
    import duckdb
    from magsag.lakehouse.objstore import Lake

_PACKAGES = {
    "httpfs": ("duckdb_extension_httpfs", "s3"),
    "sqlite_scanner": ("duckdb_extension_sqlite_scanner", None),
    "postgres_scanner": ("duckdb_extension_postgres_scanner", "postgres"),
}


@cache
def private_dir() -> Path | None:
    """``<tmp>/magsag-<uid>``: this user's own folder (0700), or None if it cannot be trusted."""
    base = Path(tempfile.gettempdir()) / f"magsag-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        st = base.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return base


@cache
def _private_extension_dir() -> str:
    """DuckDB's extension directory: never the user's ~/.duckdb (nothing is installed there anyway)."""
    base = private_dir()
    if base is None:
        return tempfile.mkdtemp(prefix="magsag-duckdb-ext-")
    (base / "duckdb-extensions").mkdir(mode=0o700, exist_ok=True)
    return str(base / "duckdb-extensions")


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


_verified: set[str] = set()  # extensions whose signature DuckDB checked (this process or a marker)
_verified_lock = threading.Lock()


def _identity(path: str) -> list[Any]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino, duckdb_version()]


def _marker() -> Path | None:
    base = private_dir()
    return base / "verified-extensions.json" if base is not None else None


def _load_markers() -> None:
    """Extensions verified by an earlier process of this user, unchanged since (same size, mtime, inode)."""
    marker = _marker()
    if marker is None:
        return
    try:
        st = marker.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return
        seen = json.loads(marker.read_text())
    except (OSError, ValueError):
        return
    for path, ident in seen.items():
        try:
            if _identity(path) == ident:
                _verified.add(path)
        except OSError:
            continue


def _save_markers(paths: list[str]) -> None:
    marker = _marker()
    if marker is None:
        return
    try:
        seen = json.loads(marker.read_text()) if marker.exists() else {}
        seen.update({p: _identity(p) for p in paths})
        tmp = marker.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(seen, f)
        os.replace(tmp, marker)
    except (OSError, ValueError):
        pass


_markers_loaded = False


def new_connection(threads: int | None = None, extensions: tuple[str, ...] = ()) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with ``extensions`` loaded, in UTC, that never installs or autoloads.

    DuckDB checks an extension's signature on every load (0.1-0.3 s each on these
    machines). The first load of an extension file has it checked; later loads of the same
    file (same size, mtime and inode, recorded in this user's private 0700 temp folder)
    skip the check. Nothing else can be loaded unsigned: autoloading is off, and locked
    connections (``data sql``) refuse LOAD altogether.
    """
    import duckdb

    global _markers_loaded
    paths = [extension_path(name) for name in extensions]
    with _verified_lock:
        if paths and not _markers_loaded:
            _load_markers()
            _markers_loaded = True
        unsigned = bool(paths) and all(p in _verified for p in paths)
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
    if unsigned:
        config["allow_unsigned_extensions"] = True
    con = duckdb.connect(":memory:", config=config)
    try:
        con.execute("SET TimeZone = 'UTC'")  # icu is built into the wheel
        with contextlib.suppress(duckdb.Error):  # inside Jupyter DuckDB may refuse (no ipywidgets)
            con.execute("SET enable_progress_bar = false")  # never mixed into --format csv/json output
        # Lake files are immutable (a new name per write; compaction writes new files): their
        # HEAD results, footers and cached blocks stay valid for the connection's life.
        con.execute("SET enable_http_metadata_cache = true")
        con.execute("SET parquet_metadata_cache = true")
        con.execute("SET validate_external_file_cache = 'NO_VALIDATION'")
        for path in paths:
            con.execute(f"LOAD {sql_string(path)}")
    except BaseException:
        con.close()
        raise
    with _verified_lock:
        new = [p for p in paths if p not in _verified]
        _verified.update(paths)
        if new:
            _save_markers(new)
    return con


def lake_extensions(lake: Lake) -> tuple[str, ...]:
    """Extensions a connection needs to read ``lake``."""
    return ("httpfs",) if lake.protocol == "s3" and lake.s3 is not None else ()


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.execute(f"LOAD {sql_string(extension_path(name))}")


def _loaded(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(f"SELECT loaded FROM duckdb_extensions() WHERE extension_name = {sql_string(name)}").fetchone()
    return bool(row and row[0])


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: list[str]) -> str:
    return "[" + ", ".join(sql_string(v) for v in values) + "]"


def literal(value: Any) -> str:
    """A SQL literal of a str, int, float, bool or None."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else f"'{value}'::DOUBLE"
    if isinstance(value, str):
        return sql_string(value)
    raise TypeError(f"cannot inline a {type(value).__name__} into SQL")


def bind(sql: str, params: list[Any]) -> str:
    """Replace the ``?`` placeholders of ``sql`` (outside string literals) with literals.

    DuckDB's Python client imports pandas (over a second here) the first time a query
    is given parameters; inlining keeps every query of this package free of that cost.
    """
    out, n = [], 0
    quoted = False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "?" and not quoted:
            if n >= len(params):
                raise ValueError("more placeholders than parameters")
            out.append(literal(params[n]))
            n += 1
        else:
            out.append(ch)
    if n != len(params):
        raise ValueError("more parameters than placeholders")
    return "".join(out)


def attach_lake(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Make ``lake.uri(...)`` paths readable on ``con`` (httpfs + secret, or fsspec)."""
    if lake.is_local:
        return
    if lake.protocol == "s3" and lake.s3 is not None:
        if not _loaded(con, "httpfs"):
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
    if not _loaded(con, "postgres_scanner"):
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
    if not _loaded(con, "sqlite_scanner"):
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
