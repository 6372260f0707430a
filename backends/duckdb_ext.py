"""DuckDB connections that never download anything: extensions from pip packages, by path.

Extensions that are not built into the ``duckdb`` wheel (``httpfs``, ``aws``,
``sqlite_scanner``, ``postgres_scanner``) come from the ``duckdb-extension-*`` pip
packages matched to the installed DuckDB and are loaded by file path. A connection made
here never installs or autoloads an extension, refuses community extensions and
persistent secrets, and keeps DuckDB's extension directory in this user's private
temporary folder instead of ``~/.duckdb``.

Every layer uses it: the lake's query connections, the SQLite export worker (a child
process) and the PostgreSQL export engine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import stat
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from magsag.backends.duckdb_sql import sql_string
from magsag.backends.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

# extension -> (its pip package, the magsag extra that installs it)
PACKAGES = {
    "httpfs": ("duckdb_extension_httpfs", "s3"),
    "aws": ("duckdb_extension_aws", "s3"),
    "sqlite_scanner": ("duckdb_extension_sqlite_scanner", None),
    "postgres_scanner": ("duckdb_extension_postgres_scanner", "postgres"),
    "vss": ("duckdb_extension_vss", "semantic"),
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
def private_extension_dir() -> str:
    """DuckDB's extension directory: never the user's ~/.duckdb (nothing is installed there anyway)."""
    base = private_dir()
    if base is None:
        return tempfile.mkdtemp(prefix="magsag-duckdb-ext-")
    (base / "duckdb-extensions").mkdir(mode=0o700, exist_ok=True)
    return str(base / "duckdb-extensions")


@cache
def duckdb_version() -> str:
    """The installed DuckDB's version, from package metadata (importing DuckDB costs ~40 MB of RSS)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("duckdb")
    except PackageNotFoundError:  # pragma: no cover - a DuckDB without metadata
        import duckdb

        return duckdb.__version__


@cache
def find_extension(name: str) -> str | None:
    """File of extension ``name`` shipped by its pip package for this DuckDB, or None."""
    package, _ = PACKAGES[name]
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = Path(base) / "extensions" / f"v{duckdb_version()}" / f"{name}.duckdb_extension"
        if path.is_file():
            return str(path)
    return None


def extension_path(name: str) -> str:
    """Like :func:`find_extension`, but a missing package is a :class:`ConfigError` saying what to install."""
    path = find_extension(name)
    if path is not None:
        return path
    package, extra = PACKAGES[name]
    version = duckdb_version()
    hint = f"pip install 'magsag-storage[{extra}]'" if extra else f"pip install {package.replace('_', '-')}"
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"the DuckDB {name} extension is not installed ({hint})")
    raise ConfigError(f"the installed {package} does not match DuckDB {version} ({hint}=={version})")


# ------------------------------------------------------- signature checks, once per file
#
# DuckDB checks an extension's signature on every load (0.1-0.3 s each). The first load of
# a file has it checked; later loads of the same file (same size, mtime and inode, recorded
# in this user's private 0700 folder) skip the check.

_verified: set[str] = set()
_verified_lock = threading.Lock()
_markers_loaded = False


def _identity(path: str) -> list[Any]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino, duckdb_version()]


def _marker() -> Path | None:
    base = private_dir()
    return base / "verified-extensions.json" if base is not None else None


def _load_markers() -> None:
    """Extensions verified by an earlier process of this user, unchanged since."""
    marker = _marker()
    if marker is None:
        return
    try:
        st = marker.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return
        seen = orjson.loads(marker.read_bytes())
    except (OSError, ValueError):
        return
    if not isinstance(seen, dict):
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
        seen = orjson.loads(marker.read_bytes()) if marker.exists() else {}
        if not isinstance(seen, dict):
            seen = {}
        seen.update({p: _identity(p) for p in paths})
        tmp = marker.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(seen))
        os.replace(tmp, marker)
    except (OSError, ValueError):
        pass


def new_connection(
    threads: int | None = None,
    extensions: tuple[str, ...] = (),
    *,
    files: tuple[str, ...] = (),
    config: dict[str, Any] | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with ``extensions`` loaded, in UTC, that never installs or autoloads.

    ``files`` are extension files given by path (a child process is handed the path its
    parent found); ``config`` adds DuckDB settings (``memory_limit``, ``temp_directory``...). Nothing can
    be loaded unsigned but the files verified before: autoloading is off, and locked
    connections (``data sql``) refuse LOAD altogether.
    """
    import duckdb

    global _markers_loaded
    paths = [extension_path(name) for name in extensions] + list(files)
    with _verified_lock:
        if paths and not _markers_loaded:
            _load_markers()
            _markers_loaded = True
        unsigned = bool(paths) and all(p in _verified for p in paths)
    settings: dict[str, Any] = {
        "extension_directory": private_extension_dir(),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_persistent_secrets": False,
        "python_enable_replacements": False,
        **(config or {}),
    }
    if threads:
        settings["threads"] = threads
    if unsigned:
        settings["allow_unsigned_extensions"] = True
    con = duckdb.connect(":memory:", config=settings)
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


def is_loaded(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(f"SELECT loaded FROM duckdb_extensions() WHERE extension_name = {sql_string(name)}").fetchone()
    return bool(row and row[0])


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load extension ``name`` from its package into ``con`` (once)."""
    if not is_loaded(con, name):
        con.execute(f"LOAD {sql_string(extension_path(name))}")
