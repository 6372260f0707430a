"""The documented Python API of the MAGSAG storage layer.

>>> storage = await get_storage_backend()          # doctest: +SKIP
>>> runs = await storage.list_runs(limit=10)        # doctest: +SKIP

Settings come from ``MAGSAG_STORAGE_*`` environment variables or ``.env`` (see
:class:`lakehouse.settings.StorageSettings`); keyword overrides win.
"""

from __future__ import annotations

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
]
