"""The tier-aware store behind ``magsag.storage.get_storage_backend()``.

:class:`TieredBackend` wraps the hot store. Writes, retention and every hot-only extra
(``stats``, ``read``/``write`` hooks, ``drop_day_partition`` ...) go to the hot store
unchanged. Reads see the hot store and the lake as one:

* ``get_run``: the hot copy if there is one (it is the one that may still change), else
  the lake's;
* ``get_events``, ``list_runs``, ``search_text``: both tiers, merged in the contract's
  order, each row once (the hot copy wins), limits and offsets applied to the merged
  result; events and search hits carry ``tier`` ('hot' or 'lake');
* ``query_metrics``: the samples of both tiers, deduplicated by event id, aggregated
  exactly as the hot stores do.

Every read asks the hot store first and lists the lake afterwards. Tiering commits a
day to the lake before it deletes it from the hot store, so a row moving while a read
runs is seen in one tier or both (then deduplicated), never in neither.

With no lake (the folder or bucket prefix does not exist), reads are the hot store's
own, with no DuckDB start-up: a pure-hot store pays one ``stat`` per read.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from magsag.backends import jsontext
from magsag.backends.base import StorageBackend, StorageCapabilities, Window, aggregate
from magsag.backends.capabilities import has, require
from magsag.backends.errors import NotFoundError, QueryError
from magsag.backends.schema import Event, Run, event_record, from_us, run_record
from magsag.lakehouse import search
from magsag.lakehouse.lakefiles import SnapshotReader
from magsag.lakehouse.lakeread import LakeReader, day_range, is_placeholder, resolve_placeholders

if TYPE_CHECKING:
    from magsag.lakehouse.objstore import Lake
    from magsag.lakehouse.settings import StorageSettings


class TieredBackend(StorageBackend):
    """Hot store + lake behind the one ``StorageBackend`` contract (see the module doc)."""

    def __init__(
        self,
        hot: StorageBackend,
        lake: Lake | None = None,
        *,
        lake_url: str | None = None,
        settings: StorageSettings | None = None,
    ):
        self.hot = hot
        self.name = hot.name  # type: ignore[misc]
        self._lake = lake
        self._lake_url = lake_url
        self._settings = settings
        self._reader: LakeReader | None = None

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> TieredBackend:
        from magsag.lakehouse.settings import backend_from_settings

        return cls(backend_from_settings(settings), lake_url=settings.lake_url, settings=settings)

    def __repr__(self) -> str:
        return f"TieredBackend({self.hot!r}, lake={self._lake_url or (self._lake.url if self._lake else None)!r})"

    def __getattr__(self, name: str) -> Any:
        # Hot-only extras (stats, read/write hooks, drop_day_partition, db_path, ...).
        if name.startswith("__") or name == "hot":
            raise AttributeError(name)
        return getattr(self.hot, name)

    def tier_source(self) -> Any:
        """The hot store's tiering source (the tiering job moves hot data, never lake data)."""
        from magsag.backends.tiering.protocol import tier_source

        return tier_source(self.hot)

    # ------------------------------------------------------------ lifecycle
    async def initialize(self) -> None:
        if "magsag.lakehouse.query" in sys.modules and has(self.hot, "duckdb_source"):
            # Query connections of this process that attach the store give it up first.
            from magsag.lakehouse.query import release

            release(self.hot.duckdb_exclusive_key())  # type: ignore[attr-defined]
        await self.hot.initialize()

    async def close(self) -> None:
        try:
            await self.hot.close()
        finally:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    @property
    def capabilities(self) -> StorageCapabilities:
        return self.hot.capabilities

    # ------------------------------------------------------------ the lake
    @property
    def lake(self) -> Lake | None:
        if self._lake is None and self._lake_url:
            from magsag.lakehouse.objstore import open_lake

            self._lake = open_lake(self._lake_url, self._settings)
        return self._lake

    def _lake_reader(self) -> LakeReader:
        if self._reader is None:
            assert self.lake is not None
            self._reader = LakeReader(self.lake, SnapshotReader(self.lake))
        return self._reader

    async def _has_lake(self) -> bool:
        lake = self.lake
        if lake is None:
            return False
        reader = self._lake_reader()
        if lake.is_local:
            return reader.snapshots.exists()
        return await asyncio.to_thread(reader.snapshots.exists)

    async def _in_lake(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    # ---------------------------------------------------------------- writes
    async def _append_row(self, row: tuple[Any, ...]) -> None:
        await self.hot._append_row(row)

    async def _append_validated(self, events: list[Event]) -> int:
        return await self.hot._append_validated(events)

    async def _create_run(self, run: Run, explicit_start: bool) -> dict[str, Any]:
        started = from_us(run.started_at_us) if explicit_start else None
        return await self.hot.create_run(
            run.run_id, run.agent_slug, run.parent_run_id, started, run.status, list(run.tags)
        )

    async def upsert_runs(self, runs: Iterable[Run | Mapping[str, Any]]) -> int:
        return await self.hot.upsert_runs(runs)

    async def _update_run(
        self, run_id: str, status: str | None, ended_us: int | None, patch: str | None, clear_end: bool
    ) -> dict[str, Any]:
        ended = from_us(ended_us) if ended_us is not None else None
        metrics = jsontext.loads(patch) if patch is not None else None
        try:
            return await self.hot.update_run(run_id, status=status, ended_at=ended, metrics=metrics)
        except NotFoundError:
            if await self._has_lake() and await self._in_lake(self._lake_reader().run, run_id) is not None:
                raise NotFoundError(f"run {run_id!r} is in the lake (tiered runs are finished and read-only)") from None
            raise

    async def _vacuum(
        self, hot_days: int, max_disk_mb: float | None, dry_run: bool, now: datetime | None, keep: list[date]
    ) -> dict[str, Any]:
        """Retention of the hot store (the lake keeps what it holds)."""
        return await self.hot.vacuum(hot_days, max_disk_mb, dry_run, now=now, keep_days=keep)

    # ----------------------------------------------------------------- reads
    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        found = await self.hot.get_run(run_id)
        if (found is not None and not is_placeholder(found)) or not await self._has_lake():
            return found
        row = await self._in_lake(self._lake_reader().run, run_id)
        return run_record(row) if row is not None else found  # the lake's record beats a placeholder

    async def run_tier(self, run_id: str) -> str | None:
        """Where the run record is: 'hot', 'lake' or None."""
        hot = await self.hot.get_run(run_id)
        if hot is not None and not is_placeholder(hot):
            return "hot"
        if await self._has_lake() and await self._in_lake(self._lake_reader().run, run_id) is not None:
            return "lake"
        return "hot" if hot is not None else None

    async def locate_run(self, run_id: str) -> dict[str, Any]:
        """Where a run lives: ``{"run": 'hot'|'lake'|None, "events": {"hot": n, "lake": m}}``."""
        counts = {"hot": 0, "lake": 0}
        async for e in self.get_events(run_id):
            counts[e["tier"]] += 1
        return {"run": await self.run_tier(run_id), "events": counts}

    async def _events(
        self, run_id: str, event_type: str | None, level: str | None, limit: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        if not await self._has_lake():
            async for e in self.hot.get_events(run_id, event_type=event_type, level=level, limit=limit):
                e["tier"] = "hot"
                yield e
            return
        hot = [e async for e in self.hot.get_events(run_id, event_type=event_type, level=level, limit=limit)]
        if limit == 0:
            return
        rows = await self._in_lake(self._lake_reader().events, run_id, event_type, level, limit)
        seen = {e["event_id"] for e in hot}
        lake = []
        for r in rows:
            if r[0] not in seen:
                rec = event_record(r)
                rec["tier"] = "lake"
                lake.append(rec)
        for e in hot:
            e["tier"] = "hot"
        # ISO-8601 UTC strings of one format sort as times; lake first on equal times (older tier).
        merged = sorted([*lake, *hot], key=lambda e: e["ts"])
        for e in merged if limit is None else merged[:limit]:
            yield e

    def _stream_events(self, flt: Any, cursor: str | None, follow: bool) -> AsyncIterator[dict[str, Any]]:
        """The hot store's stream (events are committed there; ``since`` replays what is still hot)."""
        since = from_us(flt.since_us) if flt.since_us is not None else None
        return _tagged_hot(
            self.hot.stream_events(
                flt.run_id, flt.agent_slug, flt.event_type, flt.level, since, cursor=cursor, follow=follow
            )
        )

    async def _list_runs(self, window: Window, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        agent_slug, since, until = window.agent_slug, window.since, window.until
        if not await self._has_lake():
            return await self.hot.list_runs(agent_slug, status, since, until, limit, offset)
        if limit == 0:
            return []
        want = limit + offset
        n = want
        while True:
            all_hot = await self.hot.list_runs(agent_slug, status, since, until, n, 0)
            rows = await self._in_lake(self._lake_reader().runs, agent_slug, status, since, until, n)
            shadowed = await self._in_lake(resolve_placeholders, self._lake_reader(), all_hot)
            hot = [r for r in all_hot if r["run_id"] not in shadowed]  # the lake's record is the run
            seen = {r["run_id"] for r in hot}
            merged = [*hot, *(run_record(r) for r in rows if r[0] not in seen)]
            merged.sort(key=lambda r: (r["started_at"], r["run_id"]), reverse=True)
            if len(merged) >= want or (len(all_hot) < n and len(rows) < n):
                return merged[offset:want]
            n *= 2

    async def _search_text(self, query: str, window: Window, limit: int, raw: bool) -> list[dict[str, Any]]:
        agent_slug, since, until = window.agent_slug, window.since, window.until
        hits = await self.hot.search_text(query, agent_slug, since, limit, raw=raw, until=until)
        for h in hits:
            h["tier"] = "hot"
        if limit == 0 or not await self._has_lake():
            return hits
        reader = self._lake_reader()
        snap = await self._in_lake(reader.snapshots.snapshot)
        if not snap.of("events", *day_range(since, until)):
            return hits
        compiled = search.compile_query(query, raw)
        if compiled is None:
            return hits
        rows = await self._in_lake(reader.search, compiled, agent_slug, since, until, limit)
        if not rows:
            return hits
        seen = {h["event_id"] for h in hits}
        for h in hits:
            h["score"] = search.score(h.get("msg"), compiled.terms)
        for r in rows:
            if r[0] in seen:
                continue
            rec = event_record(r[:-1])
            rec["score"] = float(r[-1])
            rec["tier"] = "lake"
            hits.append(rec)
        hits.sort(key=lambda h: (h["score"], h["ts"]), reverse=True)
        return hits[:limit]

    async def _vector_tiers(self) -> tuple[Any, list[Any], Any]:
        """(embedder, [hot, lake] searches, lake vector lookup) for semantic search (docs/search.md)."""
        from magsag.lakehouse import lake_vectors

        return await lake_vectors.tiers(self)

    async def search_similar(
        self,
        text: str | None = None,
        event_id: str | None = None,
        run_id: str | None = None,
        agent_slug: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        from magsag.backends import semantic

        embedder, tiers, lookup = await self._vector_tiers()
        return await semantic.search_similar(
            self.hot,
            tiers,
            embedder,
            text=text,
            event_id=event_id,
            run_id=run_id,
            agent_slug=agent_slug,
            event_type=event_type,
            since=since,
            until=until,
            limit=limit,
            lookup=lookup,
        )

    async def similar_runs(self, run_id: str, limit: int = 10) -> list[dict[str, Any]]:
        from magsag.backends import semantic

        embedder, tiers, _ = await self._vector_tiers()
        return await semantic.similar_runs(self, tiers, embedder, run_id, limit)

    async def _query_metrics(self, metric_name: str, window: Window, aggregation: str) -> tuple[Any, int]:
        agent_slug, since, until = window.agent_slug, window.since, window.until
        if await self._has_lake():
            reader = self._lake_reader()
            snap = await self._in_lake(reader.snapshots.snapshot)
            if snap.of("events", *day_range(since, until)):
                require(self.hot, "metric_samples", "query_metrics over hot + lake")
                hot = await self.hot.metric_samples(metric_name, agent_slug, since, until)  # type: ignore[attr-defined]
                lake = await self._in_lake(reader.metric_samples, metric_name, agent_slug, since, until)
                values = dict(lake)
                values.update(hot)
                return aggregate(aggregation, list(values.values()))
        found = await self.hot.query_metrics(metric_name, agent_slug, since, until, aggregation)
        return found["value"], found["count"]


async def _tagged_hot(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        async for e in events:
            e["tier"] = "hot"
            yield e
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def unwrap(backend: StorageBackend) -> StorageBackend:
    """The hot store behind a :class:`TieredBackend` (or the backend itself)."""
    return backend.hot if isinstance(backend, TieredBackend) else backend


__all__ = ["QueryError", "TieredBackend", "unwrap"]
