"""A third-party backend written against the contract as it was before the validate-once split.

It overrides every public method itself (no ``_impl`` methods; the overrides are made by
``_delegate`` with the contract's signatures) and declares no optional capability, the
way a custom backend from docs/api.md may. Its storage is a real SQLite
store it delegates to, so the whole contract suite can run against it unchanged.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

from magsag.backends.base import StorageBackend, StorageCapabilities
from magsag.backends.schema import Event

from magsag.storage.backends.sqlite import SQLiteStorageBackend


def _delegate(name: str) -> Any:
    """An override of the public method ``name`` (same signature) that calls the inner store's."""
    if name in ("get_events", "stream_events"):  # plain functions returning async iterators

        def method(self: LegacyApiBackend, *args: Any, **kwargs: Any) -> Any:
            return getattr(self.inner, name)(*args, **kwargs)

    else:

        async def method(self: LegacyApiBackend, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            return await getattr(self.inner, name)(*args, **kwargs)

    method.__name__ = name
    method.__signature__ = inspect.signature(getattr(StorageBackend, name))  # type: ignore[attr-defined]
    return method


class LegacyApiBackend(StorageBackend):
    name: ClassVar[str] = "legacy-api"

    def __init__(self, db_path: Path):
        self.inner = SQLiteStorageBackend(db_path)

    @classmethod
    def from_settings(cls, settings: Any) -> LegacyApiBackend:
        return cls(settings.db_path)

    async def initialize(self) -> None:
        await self.inner.initialize()

    async def close(self) -> None:
        await self.inner.close()

    @property
    def capabilities(self) -> StorageCapabilities:
        return StorageCapabilities(
            append_event=True, get_run=True, list_runs=True, query_metrics=True, search_text=True, streaming=True
        )

    async def _append_validated(self, events: list[Event]) -> int:
        return await self.inner.append_events(events)

    create_run = _delegate("create_run")
    update_run = _delegate("update_run")
    get_run = _delegate("get_run")
    list_runs = _delegate("list_runs")
    get_events = _delegate("get_events")
    stream_events = _delegate("stream_events")
    search_text = _delegate("search_text")
    query_metrics = _delegate("query_metrics")
    vacuum = _delegate("vacuum")
