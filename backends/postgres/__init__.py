"""The PostgreSQL hot store: the production backend (asyncpg, JSONB, tsvector, day partitions).

Modules: ``store`` (the :class:`PostgresStorageBackend`), ``conn`` (DSN checks, the pool),
``schema`` (DDL, migrations), ``ingest`` (COPY and group commit), ``partitions`` (day
partitions / TimescaleDB chunks), ``retention`` (``vacuum``), ``tiering`` (its
``TierSource``), ``tier_rows`` (a claim's rows as Arrow), ``tier_lock``, ``tier_delete``.

Importing this package does not import asyncpg; the store class is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from magsag.backends.postgres.store import PostgresStorageBackend

__all__ = ["PostgresStorageBackend"]


def __getattr__(name: str) -> Any:
    if name == "PostgresStorageBackend":
        from magsag.backends.postgres.store import PostgresStorageBackend

        return PostgresStorageBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
