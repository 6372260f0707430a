"""The documented Python API of the MAGSAG storage layer.

>>> storage = await get_storage_backend()          # doctest: +SKIP
>>> runs = await storage.list_runs(limit=10)        # doctest: +SKIP

Settings come from ``MAGSAG_STORAGE_*`` environment variables or ``.env`` (see
:class:`lakehouse.settings.StorageSettings`); keyword overrides win.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from backends.base import StorageBackend, StorageCapabilities
from backends.errors import (
    BackendUnavailable,
    ConfigError,
    NotFoundError,
    QueryError,
    StorageError,
    ValidationError,
)
from backends.schema import ARTIFACT, DELEGATION, LOG, MCP_CALL, METRIC, Event
from lakehouse.settings import StorageSettings, backend_from_settings, load_settings


@asynccontextmanager
async def open_storage(settings: StorageSettings | None = None, **overrides: Any) -> AsyncIterator[StorageBackend]:
    """``async with open_storage() as storage:`` — :func:`get_storage_backend` that closes itself."""
    storage = await get_storage_backend(settings, **overrides)
    try:
        yield storage
    finally:
        await storage.close()


async def vacuum_storage(
    storage: StorageBackend,
    settings: StorageSettings,
    *,
    hot_days: int | None = None,
    max_disk_mb: float | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Retention as the settings ask: ``hot_days`` from settings unless given.

    With ``MAGSAG_STORAGE_ARCHIVE_ENABLED=true`` days not archived yet (to
    ``MAGSAG_STORAGE_ARCHIVE_DESTINATION``, or anywhere when unset) are kept and listed in
    ``refused_days`` (see :func:`lakehouse.tiering.guarded_vacuum`).
    """
    hot_days = settings.hot_days if hot_days is None else hot_days
    if not settings.archive_enabled:
        return await storage.vacuum(hot_days=hot_days, max_disk_mb=max_disk_mb, dry_run=dry_run)
    from lakehouse.tiering import guarded_vacuum

    return await guarded_vacuum(storage, settings, hot_days=hot_days, max_disk_mb=max_disk_mb, dry_run=dry_run)


async def get_storage_backend(settings: StorageSettings | None = None, **overrides: Any) -> StorageBackend:
    """Open the configured hot store, initialized and ready (close it with ``await storage.close()``)."""
    settings = settings or load_settings(**overrides)
    backend = backend_from_settings(settings)
    await backend.initialize()
    return backend


__all__ = [
    "ARTIFACT",
    "DELEGATION",
    "LOG",
    "MCP_CALL",
    "METRIC",
    "BackendUnavailable",
    "ConfigError",
    "Event",
    "NotFoundError",
    "QueryError",
    "StorageBackend",
    "StorageCapabilities",
    "StorageError",
    "StorageSettings",
    "ValidationError",
    "get_storage_backend",
    "load_settings",
    "open_storage",
    "vacuum_storage",
]
