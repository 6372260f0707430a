"""Connecting to PostgreSQL: DSN checks, the asyncpg pool, and one-line errors.

Every asyncpg or socket error is turned into one error of the
:mod:`magsag.backends.errors` family whose message names the problem in one line (server
unreachable, wrong password, missing database, permission denied, statement timeout)
and never contains a password: messages name the server as ``user@host:port/db`` and
everything else passes through :func:`~magsag.backends.errors.redact_dsn`. Errors are raised
``from None``, so a printed traceback does not carry the driver's exception either.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from magsag.backends.errors import BackendUnavailable, ConfigError, LockedError, QueryError, StorageError, redact_dsn

try:
    import asyncpg
except ImportError:  # pragma: no cover - exercised only without the [postgres] extra
    asyncpg = None  # type: ignore[assignment]

# Timestamps cross the wire as integer microseconds since the Unix epoch, the hot
# stores' internal representation (asyncpg's "tuple" format counts from 2000-01-01).
_PG_EPOCH_US = 946_684_800_000_000


def require_asyncpg() -> Any:
    if asyncpg is None:
        raise ConfigError("the postgres backend needs asyncpg: pip install 'magsag-storage[postgres]'")
    return asyncpg


@dataclass(frozen=True)
class DsnInfo:
    """What a message may say about a DSN: never the password."""

    user: str
    host: str
    port: str
    database: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    @classmethod
    def parse(cls, dsn: str) -> DsnInfo:
        if not isinstance(dsn, str) or not dsn.strip():
            raise ConfigError("MAGSAG_STORAGE_DSN is empty; set it to e.g. postgresql://user@host:5432/db")
        # No part of the DSN is ever quoted back: a password can hold any character, so
        # nothing short of the parsed user, host, port and database is known not to be one.
        try:
            parts = urlsplit(dsn.strip())
            netloc_host = parts.hostname
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"MAGSAG_STORAGE_DSN is not a valid URL ({_url_problem(exc)})") from None
        if parts.scheme not in ("postgresql", "postgres") or not dsn.strip().startswith(f"{parts.scheme}://"):
            raise ConfigError(
                "MAGSAG_STORAGE_DSN must start with postgresql:// (e.g. postgresql://user@host:5432/db); "
                "the value given does not (not shown: it may hold a password)"
            )
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(k for k in query if k not in DSN_PARAMETERS)
        if unknown:
            shown = unknown[0] if unknown[0].isascii() and unknown[0].isprintable() and len(unknown[0]) <= 40 else "?"
            raise ConfigError(
                f"MAGSAG_STORAGE_DSN: parameter {shown!r} is not supported "
                f"(supported: {', '.join(sorted(DSN_PARAMETERS))})"
            )
        user = query.get("user") or (unquote(parts.username) if parts.username else None)
        user = user or os.environ.get("PGUSER") or _os_user()
        host = query.get("host") or netloc_host or os.environ.get("PGHOST") or "localhost"
        database = query.get("dbname") or query.get("database") or unquote(parts.path.lstrip("/"))
        database = database or os.environ.get("PGDATABASE") or user
        port = query.get("port") or port
        return cls(user=user, host=host, port=str(port or os.environ.get("PGPORT") or 5432), database=database)


# DSN query parameters honoured by both connection paths (asyncpg and DuckDB's libpq);
# any other is refused by name, so none is silently ignored by one of them.
DSN_PARAMETERS = frozenset(
    {
        "host",
        "port",
        "user",
        "password",
        "dbname",
        "database",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "passfile",
        "connect_timeout",
        "application_name",
        "target_session_attrs",
    }
)


def pg_params(dsn: str) -> dict[str, str]:
    """The one DSN parser: libpq parameters of ``postgresql://user:pw@host:port/db?k=v``.

    Query parameters win over the URL's parts (``?host=/run/postgresql`` is a socket
    folder); ``database`` is ``dbname``. Raises :class:`ConfigError` for a malformed DSN
    or a parameter not in :data:`DSN_PARAMETERS` (named, its value never shown).
    """
    DsnInfo.parse(dsn)  # scheme, host and port checks, one-line errors without the DSN
    parts = urlsplit(dsn.strip())
    out: dict[str, str] = {}
    if parts.hostname:
        out["host"] = unquote(parts.hostname)
    if parts.port:
        out["port"] = str(parts.port)
    if parts.username:
        out["user"] = unquote(parts.username)
    if parts.password:
        out["password"] = unquote(parts.password)
    if parts.path.lstrip("/"):
        out["dbname"] = unquote(parts.path.lstrip("/"))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in DSN_PARAMETERS:
            shown = key if key.isascii() and key.isprintable() and len(key) <= 40 else "?"
            raise ConfigError(
                f"MAGSAG_STORAGE_DSN: parameter {shown!r} is not supported "
                f"(supported: {', '.join(sorted(DSN_PARAMETERS))})"
            )
        out["dbname" if key == "database" else key] = value
    return out


def _url_problem(exc: ValueError) -> str:
    """What urllib found wrong, without its quote of the offending text."""
    text = str(exc)
    if "Port" in text or "port" in text:
        return "its port is not a number from 0 to 65535"
    if "IPv6" in text:
        return "an IPv6 host lacks its brackets"
    return "it cannot be parsed"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no user database entry
        return "postgres"


async def init_connection(conn: Any) -> None:
    """Per-connection setup of the pool: timestamps as integer microseconds."""
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=lambda us: (us - _PG_EPOCH_US,),
        decoder=lambda t: t[0] + _PG_EPOCH_US,
        format="tuple",
    )


async def create_pool(
    dsn: str,
    info: DsnInfo,
    *,
    min_size: int,
    max_size: int,
    statement_timeout_ms: int,
    connect_timeout: float,
) -> Any:
    """An asyncpg pool, or a one-line :class:`StorageError` saying why there is none."""
    pg = require_asyncpg()
    settings = {
        "application_name": "magsag",
        "statement_timeout": str(int(statement_timeout_ms)),
        # JIT compiling costs more than it saves on these short queries.
        "jit": "off",
    }
    try:
        return await pg.create_pool(
            dsn,
            min_size=min(min_size, max_size),
            max_size=max_size,
            init=init_connection,
            server_settings=settings,
            timeout=connect_timeout,
        )
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
            raise
        raise connect_error(exc, info, connect_timeout) from None


def connect_error(exc: BaseException, info: DsnInfo, timeout: float | None = None) -> StorageError:
    """The one-line error for a failure to open a connection."""
    where = f"PostgreSQL at {info.host}:{info.port}"
    if asyncpg is not None:
        if isinstance(exc, asyncpg.InvalidPasswordError):
            return ConfigError(
                f"{where} rejected the password of user {info.user!r} (check MAGSAG_STORAGE_DSN or PGPASSWORD)"
            )
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return ConfigError(f"database {info.database!r} does not exist on {where} (create it or fix the DSN)")
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            return ConfigError(f"{where} refused user {info.user!r}: {_first_line(exc)}")
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return ConfigError(f"permission denied on {where} for user {info.user!r}: {_first_line(exc)}")
        if isinstance(exc, (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError)):
            return BackendUnavailable(f"{where} is not accepting connections: {_first_line(exc)}")
        if isinstance(exc, asyncpg.PostgresError):
            return BackendUnavailable(f"cannot connect to {where}: {_first_line(exc)}")
        if isinstance(exc, asyncpg.ClientConfigurationError):
            return ConfigError(f"MAGSAG_STORAGE_DSN is invalid: {_first_line(exc)}")
    if isinstance(exc, socket.gaierror):
        return BackendUnavailable(f"cannot reach {where}: unknown host {info.host!r}")
    if isinstance(exc, ConnectionRefusedError):
        return BackendUnavailable(f"cannot reach {where}: connection refused (is the server running?)")
    if isinstance(exc, TimeoutError):
        limit = f" after {timeout:g}s" if timeout else ""
        return BackendUnavailable(f"cannot reach {where}: no answer{limit}")
    if isinstance(exc, OSError):
        return BackendUnavailable(f"cannot reach {where}: {exc.strerror or _first_line(exc)}")
    if isinstance(exc, ValueError):
        return ConfigError(f"MAGSAG_STORAGE_DSN is invalid: {_first_line(exc)}")
    return BackendUnavailable(f"cannot connect to {where}: {type(exc).__name__}: {_first_line(exc)}")


def is_connection_loss(exc: BaseException) -> bool:
    """True when the connection (not the statement) failed: worth a retry for a read."""
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    if asyncpg is None:
        return False
    if isinstance(
        exc,
        (
            asyncpg.PostgresConnectionError,
            asyncpg.ConnectionDoesNotExistError,
            asyncpg.AdminShutdownError,
            asyncpg.CrashShutdownError,
            asyncpg.CannotConnectNowError,
            # asyncpg's protocol state breaks when the server ends an idle session
            # (MagicStack/asyncpg#1069); the connection is unusable, like a lost one.
            asyncpg.InternalClientError,
        ),
    ):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def never_sent(exc: BaseException) -> bool:
    """True when the driver failed before sending anything: even a write may be retried."""
    if asyncpg is None:
        return False
    if isinstance(exc, asyncpg.InternalClientError):
        return "cannot switch to state" in str(exc)
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def query_error(exc: BaseException, what: str, info: DsnInfo, timeout_ms: int) -> StorageError:
    """The one-line error for a failed statement (``what`` says what we were doing)."""
    if isinstance(exc, StorageError):
        return exc
    where = f"PostgreSQL at {info.host}:{info.port}"
    if is_connection_loss(exc):
        return BackendUnavailable(f"lost the connection to {where} while {what}: {_first_line(exc)}")
    if asyncpg is not None and isinstance(exc, asyncpg.PostgresError):
        if isinstance(exc, asyncpg.QueryCanceledError):
            return QueryError(
                f"{what} was canceled after the statement timeout ({timeout_ms} ms); "
                "narrow the query or raise MAGSAG_STORAGE_PG_STATEMENT_TIMEOUT_MS"
            )
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return ConfigError(f"permission denied for user {info.user!r} while {what}: {_first_line(exc)}")
        if isinstance(exc, asyncpg.LockNotAvailableError):
            return LockedError(f"{what}: another session holds a lock on the table; try again later")
        if isinstance(exc, (asyncpg.DiskFullError, asyncpg.ReadOnlySQLTransactionError)):
            return BackendUnavailable(f"{where} cannot write while {what}: {_first_line(exc)}")
        return QueryError(f"{what} failed on {where}: {_first_line(exc)} (SQLSTATE {exc.sqlstate})")
    return BackendUnavailable(f"{what} failed on {where}: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact_dsn(text[0]) if text else type(exc).__name__
