"""The lakehouse: settings, tiering of hot day-partitions into Parquet, and queries over every tier.

The query entry points are imported lazily (``import lakehouse`` stays cheap):

* :func:`connect` — a DuckDB connection with the ``events``/``runs`` views over every tier;
* :func:`refresh` — remake those views after tiering or compaction changed the lake;
* :func:`run_sql` / :func:`run_sql_async` — one read-only SELECT, refused otherwise;
* :func:`scan_events` / :func:`scan_runs` — Polars LazyFrames over the lake;
* :func:`open_storage_sync` — the tier-aware store without ``await`` (notebooks).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "connect": ("magsag.lakehouse.query", "connect"),
    "refresh": ("magsag.lakehouse.query", "refresh"),
    "run_sql": ("magsag.lakehouse.query", "run_sql"),
    "scan_events": ("magsag.lakehouse.polars_scan", "scan_events"),
    "scan_runs": ("magsag.lakehouse.polars_scan", "scan_runs"),
    "TieredBackend": ("magsag.lakehouse.tiered_backend", "TieredBackend"),
    "SyncStorage": ("magsag.lakehouse.blocking", "SyncStorage"),
}

__all__ = [*_LAZY, "open_storage_sync", "run_sql_async"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lakehouse' has no attribute {name!r}")


async def run_sql_async(sql: str, settings: Any = None) -> Any:
    """:func:`run_sql` without blocking the event loop (runs in a worker thread)."""
    import asyncio

    from magsag.lakehouse.query import run_sql

    return await asyncio.to_thread(run_sql, sql, settings)


def open_storage_sync(settings: Any = None, **overrides: Any) -> Any:
    """The tier-aware store (hot + lake) with blocking methods: ``storage.list_runs(limit=5)``."""
    from magsag.lakehouse.blocking import SyncStorage
    from magsag.lakehouse.settings import load_settings
    from magsag.lakehouse.tiered_backend import TieredBackend

    settings = settings or load_settings(**overrides)

    async def opener() -> Any:
        backend = TieredBackend.from_settings(settings)
        await backend.initialize()
        return backend

    return SyncStorage(opener)
