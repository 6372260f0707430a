"""A third-party backend written against the contract as it was before the validate-once split.

It overrides every public method itself (no ``_impl`` methods) and declares no optional
capability, the way a custom backend from docs/api.md may. Its storage is a real SQLite
store it delegates to, so the whole contract suite can run against it unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from magsag.backends.base import StorageBackend, StorageCapabilities
from magsag.backends.schema import Event

from magsag.storage.backends.sqlite import SQLiteStorageBackend


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

    async def create_run(
        self,
        run_id: str,
        agent_slug: str,
        parent_run_id: str | None = None,
        started_at: datetime | None = None,
        status: str = "running",
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        return await self.inner.create_run(run_id, agent_slug, parent_run_id, started_at, status, tags)

    async def update_run(
        self,
        run_id: str,
        status: str | None = None,
        ended_at: datetime | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return await self.inner.update_run(run_id, status, ended_at, metrics)

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        return await self.inner.get_run(run_id)

    async def list_runs(
        self,
        agent_slug: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        return await self.inner.list_runs(agent_slug, status, since, until, limit, offset)

    async def get_events(  # type: ignore[override]
        self,
        run_id: str,
        event_type: str | None = None,
        level: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        async for e in self.inner.get_events(run_id, event_type, level, limit):
            yield e

    def stream_events(
        self,
        run_id: str | None = None,
        agent_slug: str | None = None,
        event_type: str | None = None,
        level: str | None = None,
        since: datetime | None = None,
        *,
        cursor: str | None = None,
        follow: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        return self.inner.stream_events(run_id, agent_slug, event_type, level, since, cursor=cursor, follow=follow)

    async def search_text(
        self,
        query: str,
        agent_slug: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        *,
        raw: bool = False,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        return await self.inner.search_text(query, agent_slug, since, limit, raw=raw, until=until)

    async def query_metrics(
        self,
        metric_name: str,
        agent_slug: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        aggregation: str = "avg",
    ) -> dict[str, Any]:
        return await self.inner.query_metrics(metric_name, agent_slug, since, until, aggregation)

    async def vacuum(
        self,
        hot_days: int = 7,
        max_disk_mb: float | None = None,
        dry_run: bool = False,
        *,
        now: datetime | None = None,
        keep_days: Iterable[Any] | None = None,
    ) -> dict[str, Any]:
        return await self.inner.vacuum(hot_days, max_disk_mb, dry_run, now=now, keep_days=keep_days)
