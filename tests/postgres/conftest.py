"""Fixtures for the PostgreSQL backend tests: a real server, a fresh schema per module.

The server comes from ``MAGSAG_TEST_PG_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). When it cannot be reached the tests
are skipped with the reason, except under CI (``CI`` set), where they fail: a CI run
that silently skipped the production backend would prove nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from magsag.backends.errors import redact_dsn

PG_DSN = os.environ.get("MAGSAG_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _unavailable(reason: str) -> None:
    msg = f"PostgreSQL tests need a server: {reason} (set MAGSAG_TEST_PG_DSN or start the server)"
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def run_sql(dsn: str, *statements: str) -> list[Any]:
    """Run statements on a fresh connection outside any test event loop; return the last result."""
    import asyncpg

    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            out: list[Any] = []
            for sql in statements:
                out = await conn.fetch(sql)
            return out
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture(scope="session")
def sql() -> Callable[..., list[Any]]:
    """``sql(dsn, *statements)``: run statements synchronously (for sync fixtures)."""
    return run_sql


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _unavailable("asyncpg is not installed (pip install -e '.[postgres]')")
    try:
        run_sql(PG_DSN, "SELECT 1")
    except Exception as exc:
        _unavailable(f"cannot connect to {redact_dsn(PG_DSN)}: {type(exc).__name__}: {redact_dsn(str(exc))}")
    return PG_DSN


@dataclass
class Schemas:
    """The module's schema and any sibling schemas a test asks for; all dropped at the end."""

    name: str
    created: list[str] = field(default_factory=list)

    def sub(self, suffix: str) -> str:
        name = f"{self.name}_{suffix}"[:63]
        self.created.append(name)
        return name


@pytest.fixture(scope="module")
def pg_schemas(pg_dsn: str, request: pytest.FixtureRequest) -> Any:
    module = re.sub(r"[^a-z0-9_]", "_", request.module.__name__.rsplit(".", 1)[-1].lower())[:24]
    schemas = Schemas(f"t_{module}_{secrets.token_hex(3)}")
    schemas.created.append(schemas.name)
    yield schemas
    run_sql(pg_dsn, *(f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in schemas.created))


MakeBackend = Callable[..., Awaitable[Any]]


@pytest.fixture
async def make_backend(pg_dsn: str, pg_schemas: Schemas) -> AsyncIterator[MakeBackend]:
    """``await make_backend()`` opens the module schema; ``make_backend("x")`` a fresh sibling."""
    from magsag.backends.postgres.store import PostgresStorageBackend

    opened: list[Any] = []

    async def make(suffix: str | None = None, **kwargs: Any) -> Any:
        schema = pg_schemas.name if suffix is None else pg_schemas.sub(suffix)
        backend = PostgresStorageBackend(pg_dsn, schema=schema, **kwargs)
        await backend.initialize()
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        await backend.close()


@pytest.fixture
async def backend(make_backend: MakeBackend) -> Any:
    return await make_backend()


@pytest.fixture
async def admin(pg_dsn: str) -> AsyncIterator[Any]:
    """A plain asyncpg connection for checking what the backend did (catalog, raw rows)."""
    import asyncpg
    from magsag.backends.postgres.conn import init_connection

    conn = await asyncpg.connect(pg_dsn)
    await init_connection(conn)
    yield conn
    await conn.close()
