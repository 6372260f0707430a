"""The documented Python API of the MAGSAG storage layer.

>>> storage = await get_storage_backend()          # doctest: +SKIP
>>> runs = await storage.list_runs(limit=10)        # doctest: +SKIP

Settings come from ``MAGSAG_STORAGE_*`` environment variables or ``.env`` (see
:class:`magsag.lakehouse.settings.StorageSettings`); keyword overrides win.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from magsag.backends.base import StorageBackend, StorageCapabilities
from magsag.backends.errors import (
    BackendUnavailable,
    ConfigError,
    NotFoundError,
    QueryError,
    StorageError,
    ValidationError,
)
from magsag.backends.schema import ARTIFACT, DELEGATION, LOG, MCP_CALL, METRIC, Event
from magsag.lakehouse.blocking import SyncStorage
from magsag.lakehouse.settings import StorageSettings, backend_from_settings, load_settings
from magsag.lakehouse.tiered_backend import TieredBackend


@asynccontextmanager
async def open_storage(
    settings: StorageSettings | None = None, *, read_only: bool = False, **overrides: Any
) -> AsyncIterator[StorageBackend]:
    """``async with open_storage() as storage:`` — :func:`get_storage_backend` that closes itself."""
    storage = await get_storage_backend(settings, read_only=read_only, **overrides)
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
    ``refused_days`` (see :func:`magsag.lakehouse.tiering.vacuum_guard.guarded_vacuum`).
    """
    hot_days = settings.hot_days if hot_days is None else hot_days
    if not settings.archive_enabled:
        return await storage.vacuum(hot_days=hot_days, max_disk_mb=max_disk_mb, dry_run=dry_run)
    from magsag.lakehouse.tiering.vacuum_guard import guarded_vacuum

    return await guarded_vacuum(storage, settings, hot_days=hot_days, max_disk_mb=max_disk_mb, dry_run=dry_run)


async def get_run_tree(run_id: str, settings: StorageSettings | None = None, **overrides: Any) -> dict[str, Any]:
    """The delegation tree of ``run_id``: the run (status, duration, own ``cost_usd`` and
    ``total_cost_usd`` with its delegates, tier) with ``children``, each level alike, across
    the hot store and the lake. Raises :class:`NotFoundError` for an unknown run."""
    import asyncio

    from magsag.lakehouse.run_tree import run_tree

    settings = settings or load_settings(**overrides)
    tree = await asyncio.to_thread(run_tree, run_id, settings)
    if tree is None:
        raise NotFoundError(f"run {run_id!r} not found (in the hot store or the lake)")
    return tree


async def delete_runs(
    storage: StorageBackend,
    settings: StorageSettings | None = None,
    run_ids: Iterable[str] = (),
    *,
    children: bool = True,
    agent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    matching: str | None = None,
    dry_run: bool = False,
    resume_only: bool = False,
    lake_url: str | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Erase runs (or, with ``matching``, single events) from every tier; see docs/governance.md.

    Runs by id (with their delegated child runs unless ``children=False``), by ``agent``,
    by the time they started (``since`` inclusive, ``until`` exclusive); ``matching``
    selects the events whose message or payload text contains it. The hot store, the
    lake, every archive destination recorded in the store and ClickHouse are purged, a
    tombstone keeps the ids from coming back, and a job interrupted at any point is
    finished by the next call (``resume_only=True`` does only that). ``dry_run`` reports
    per tier what would go and writes nothing. Returns the report as a dict.
    """
    from magsag.backends.erase import EraseRequest
    from magsag.lakehouse.erase import erase

    settings = settings or load_settings()
    request = None
    if not resume_only or run_ids or agent or since or until or matching:
        request = EraseRequest(
            run_ids=tuple(run_ids),
            children=children,
            agent=agent,
            since=since,
            until=until,
            matching=matching,
        )
    report = await erase(storage, settings, request, dry_run=dry_run, lake_url=lake_url, wait=wait)
    return report.as_dict()


async def get_storage_backend(
    settings: StorageSettings | None = None, *, read_only: bool = False, **overrides: Any
) -> StorageBackend:
    """Open the configured store, initialized and ready (close it with ``await storage.close()``).

    ``read_only=True`` (what read commands use) opens an existing SQLite store for reading
    only: nothing is created or written (a missing store is a NotFoundError), and a store
    on a read-only mount works.

    Reads see the hot store and the lake (``MAGSAG_STORAGE_LAKE_URL``) as one; writes go
    to the hot store (see :class:`magsag.lakehouse.tiered_backend.TieredBackend`). ``storage.hot`` is
    the hot store itself. A read-only backend (``clickhouse``) is returned as it is.
    """
    settings = settings or load_settings(**overrides)
    missing_ok = False
    if read_only and settings.backend.strip().lower() == "sqlite" and not Path(settings.db_path).expanduser().exists():
        # No hot store: reading the lake alone is fine, if there is one (nothing is created either way).
        from magsag.lakehouse.lakefiles import SnapshotReader
        from magsag.lakehouse.objstore import open_lake

        missing_ok = SnapshotReader(open_lake(settings.lake_url, settings)).exists()
    inner = backend_from_settings(settings, read_only=read_only, missing_ok=missing_ok)
    if not inner.capabilities.append_event:
        # A read-only analytics store (clickhouse) already serves what was loaded from the
        # lake: reading the lake beside it would merge the same rows twice.
        await inner.initialize()
        return inner
    backend = TieredBackend(inner, lake_url=settings.lake_url, settings=settings)
    await backend.initialize()
    return backend


def get_storage_sync(settings: StorageSettings | None = None, **overrides: Any) -> SyncStorage:
    """The same store for notebooks and scripts: every method without ``await``.

    Works inside Jupyter (whose event loop is already running): calls run on a private
    loop in a background thread. Close it with ``storage.close()`` or use ``with``.
    """
    settings = settings or load_settings(**overrides)
    return SyncStorage(lambda: get_storage_backend(settings))  # type: ignore[arg-type]


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
    "SyncStorage",
    "TieredBackend",
    "ValidationError",
    "delete_runs",
    "get_run_tree",
    "get_storage_backend",
    "get_storage_sync",
    "load_settings",
    "open_storage",
    "vacuum_storage",
]
