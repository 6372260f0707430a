"""Two transports for the same SQL: embedded chDB (a local folder) or a remote server.

:func:`open_engine` picks one from the settings: ``MAGSAG_CLICKHOUSE_URL`` set means a
ClickHouse server through ``clickhouse-connect``; unset means chDB in
``MAGSAG_CLICKHOUSE_PATH``, so a laptop gets ClickHouse with no server. Both offer the
same small surface (:class:`Engine`): run a statement, fetch rows, insert Arrow. Every
failure becomes one line of the :mod:`magsag.backends.errors` family, credentials removed.
"""

from __future__ import annotations

import abc
import contextlib
import io
import logging
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from magsag.backends.errors import BackendUnavailable, ConfigError, QueryError, StorageError, redact_dsn

if TYPE_CHECKING:
    import pyarrow as pa
    from magsag.lakehouse.settings import StorageSettings


class AuthenticationError(BackendUnavailable, PermissionError):
    """The server refused the user or password."""


class SchemaMismatch(ConfigError):
    """Existing ClickHouse tables differ from the ones this version creates."""


_CODE = re.compile(r"Code: (\d+)")
_AUTH_CODES = {192, 516}  # UNKNOWN_USER, AUTHENTICATION_FAILED
_UNREACHABLE = re.compile(
    r"connection refused|failed to establish|name or service not known|nodename nor servname|timed out|"
    r"max retries exceeded|connection reset|no route to host|temporary failure in name resolution|"
    r"remote end closed|ssl|certificate",
    re.IGNORECASE,
)


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code in an exception's text (``Code: 60. DB::Exception: ...``)."""
    m = _CODE.search(str(exc))
    return int(m.group(1)) if m else None


def first_line(text: str, secrets: Iterable[str | None] = ()) -> str:
    """One line of a server message: no stack, no ``(version ...)`` tail, secrets removed."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    line = re.sub(r"^.*?DB::Exception: ", "", line)
    line = re.sub(r"\s*\(version [^)]*\)", "", line)
    for s in secrets:
        if s:
            line = line.replace(s, "***")
    line = redact_dsn(line)
    return line if len(line) <= 400 else line[:397] + "..."


class Engine(abc.ABC):
    """A ClickHouse connection: the same SQL (with ``{name:Type}`` parameters) on any transport."""

    kind: str = "abstract"
    database: str
    #: True when the engine runs on this machine, so ``file()`` can read a local lake.
    reads_local_files: bool = False

    @abc.abstractmethod
    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Run a statement whose result is not needed."""

    @abc.abstractmethod
    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query; rows as tuples of Python values."""

    @abc.abstractmethod
    def arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        """Run a query; the result as an Arrow table."""

    @abc.abstractmethod
    def insert_arrow(self, table: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> int:
        """Insert Arrow batches (columns by ``schema``'s names) into ``table`` of this database; return rows."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where this engine points, for messages (no credentials)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection."""

    def value(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        got = self.rows(sql, params)
        return got[0][0] if got and got[0] else None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- chDB

_chdb_lock = threading.Lock()
_chdb_open: dict[str, int] = {}  # path -> open engines (chDB serves one data folder per process)


def _escape_param(value: Any) -> Any:
    """chDB binds parameters as text in ClickHouse's escaped format (as HTTP does)."""
    if isinstance(value, str):
        return (
            value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r").replace("\0", "")
        )
    return value


class ChdbEngine(Engine):
    """The embedded ClickHouse engine, its data in a local folder."""

    kind = "chdb"
    reads_local_files = True

    def __init__(self, path: Path | str, database: str):
        try:
            from chdb import session as chdb_session
        except ImportError:
            raise ConfigError(
                "the embedded ClickHouse engine needs chdb: pip install 'magsag-storage[clickhouse]'"
            ) from None
        self.path = str(Path(path).expanduser().resolve())
        self.database = database
        with _chdb_lock:
            other = next((p for p, n in _chdb_open.items() if n > 0 and p != self.path), None)
            if other is not None:
                raise ConfigError(
                    f"chDB already has {other} open in this process and serves one data folder per process "
                    f"(asked for {self.path}); close it first or use the same MAGSAG_CLICKHOUSE_PATH"
                )
            try:
                Path(self.path).mkdir(parents=True, exist_ok=True)
                self._session = chdb_session.Session(self.path)
            except Exception as exc:
                raise BackendUnavailable(f"chDB cannot open {self.path}: {first_line(str(exc))}") from None
            _chdb_open[self.path] = _chdb_open.get(self.path, 0) + 1
        self._lock = threading.Lock()
        self._closed = False

    def describe(self) -> str:
        return f"chDB at {self.path}"

    def _query(self, sql: str, fmt: str, params: dict[str, Any] | None) -> Any:
        if self._closed:
            raise BackendUnavailable(f"{self.describe()} is closed")
        bound = {k: _escape_param(v) for k, v in (params or {}).items()} or None
        try:
            with self._lock:
                return self._session.query(sql, fmt, params=bound)
        except Exception as exc:
            raise _query_error(exc, self.describe()) from None

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._query(sql, "CSV", params)

    def arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        return self._query(sql, "ArrowTable", params)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        t = self.arrow(sql, params)
        cols = [c.to_pylist() for c in t.columns]
        return list(zip(*cols, strict=True)) if cols else []

    def insert_arrow(self, table: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> int:
        import pyarrow as pa
        from magsag.lakehouse.clickhouse.sql import insert_head

        if self._closed:
            raise BackendUnavailable(f"{self.describe()} is closed")
        head = insert_head(self.database, table, schema.names)
        sink = io.BytesIO()
        try:
            with self._lock:
                inserter = self._session.send_insert(head, "ArrowStream")
                try:
                    with pa.ipc.new_stream(sink, schema) as writer:
                        for batch in batches:
                            writer.write_batch(batch)
                            inserter.append(sink.getvalue())
                            sink.seek(0)
                            sink.truncate()
                    inserter.append(sink.getvalue())  # end-of-stream marker
                    result = inserter.finish()
                except BaseException:
                    inserter.cancel()
                    raise
        except StorageError:
            raise
        except Exception as exc:
            raise _query_error(exc, self.describe()) from None
        return int(getattr(result, "rows_written", 0))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _chdb_lock:
            _chdb_open[self.path] = max(0, _chdb_open.get(self.path, 1) - 1)
        with contextlib.suppress(Exception):  # closing after a failed open is harmless
            self._session.close()


# -------------------------------------------------------------------------- remote


class RemoteEngine(Engine):
    """A ClickHouse server through clickhouse-connect (HTTP or HTTPS)."""

    kind = "remote"
    reads_local_files = False

    def __init__(self, settings: StorageSettings):
        try:
            import clickhouse_connect
        except ImportError:
            raise ConfigError(
                "a ClickHouse server needs clickhouse-connect: pip install 'magsag-storage[clickhouse]'"
            ) from None
        url = settings.clickhouse_url or ""
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigError("MAGSAG_CLICKHOUSE_URL names no host")
        secure = parts.scheme == "https"
        port = parts.port or (8443 if secure else 8123)
        self.database = settings.clickhouse_database
        self.user = settings.clickhouse_user or parts.username or "default"
        password = settings.clickhouse_password.get_secret_value() if settings.clickhouse_password else None
        self._password = password if password is not None else (parts.password or "")
        self._where = f"{parts.scheme}://{parts.hostname}:{port}"
        kw: dict[str, Any] = {
            "host": parts.hostname,
            "port": port,
            "username": self.user,
            "password": self._password,
            "secure": secure,
            "verify": settings.clickhouse_verify,
            "connect_timeout": settings.clickhouse_connect_timeout,
            "send_receive_timeout": 3600,
            "autogenerate_session_id": False,  # no session: concurrent queries from the read backend
            "compress": True,
        }
        for key, value in (
            ("ca_cert", settings.clickhouse_ca_cert),
            ("client_cert", settings.clickhouse_client_cert),
            ("client_cert_key", settings.clickhouse_client_key),
        ):
            if value is not None:
                kw[key] = str(value)
        logging.getLogger("clickhouse_connect").addHandler(logging.NullHandler())  # errors are raised, not logged
        try:
            self._client = clickhouse_connect.get_client(**kw)
        except Exception as exc:
            raise self._error(exc) from None

    def describe(self) -> str:
        return f"ClickHouse server {self._where}"

    def _error(self, exc: BaseException) -> StorageError:
        code = error_code(exc)
        if code in _AUTH_CODES:
            return AuthenticationError(f"{self.describe()} refused user {self.user!r}: authentication failed")
        if code is None and _UNREACHABLE.search(str(exc)):
            return BackendUnavailable(f"{self.describe()} is unreachable ({_network_reason(str(exc))})")
        return _query_error(exc, self.describe(), [self._password])

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        try:
            self._client.command(sql, parameters=params or None)
        except Exception as exc:
            raise self._error(exc) from None

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return [tuple(r) for r in self._client.query(sql, parameters=params or None).result_rows]
        except Exception as exc:
            raise self._error(exc) from None

    def arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        try:
            return self._client.query_arrow(sql, parameters=params or None)
        except Exception as exc:
            raise self._error(exc) from None

    def insert_arrow(self, table: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> int:
        import pyarrow as pa

        total = 0
        try:
            for batch in batches:
                self._client.insert_arrow(table, pa.Table.from_batches([batch], schema=schema), database=self.database)
                total += batch.num_rows
        except StorageError:
            raise
        except Exception as exc:
            raise self._error(exc) from None
        return total

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


# --------------------------------------------------------------------------- shared


def _network_reason(text: str) -> str:
    """The useful part of a requests/urllib3 connection error."""
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if m:
        return m.group(1).strip().lower()
    for needle in ("timed out", "certificate verify failed", "ssl", "name or service not known"):
        if needle in text.lower():
            return needle
    return first_line(text)[:160]


def _query_error(exc: BaseException, where: str, secrets: Iterable[str | None] = ()) -> StorageError:
    code = error_code(exc)
    text = first_line(str(exc), secrets)
    if code == 81:  # UNKNOWN_DATABASE
        return ConfigError(f"{where}: {text} (run `magsag data clickhouse init`)")
    if code in (60, 47):  # UNKNOWN_TABLE, UNKNOWN_IDENTIFIER
        return SchemaMismatch(f"{where}: {text} (run `magsag data clickhouse init`)")
    if code in _AUTH_CODES:
        return AuthenticationError(f"{where}: authentication failed")
    if code == 427:  # CANNOT_COMPILE_REGEXP
        return QueryError(f"malformed regular expression: {text}")
    return QueryError(f"{where}: {text}")


def open_engine(settings: StorageSettings) -> Engine:
    """The engine the settings name: a server when ``MAGSAG_CLICKHOUSE_URL`` is set, else chDB."""
    if settings.clickhouse_url:
        return RemoteEngine(settings)
    return ChdbEngine(settings.clickhouse_path, settings.clickhouse_database)
