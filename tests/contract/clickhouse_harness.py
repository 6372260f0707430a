"""ClickHouse as the contract suite sees it: the real read backend, fed through the lake.

The contract tests write through the backend they test. ClickHouse is read-only, so this
subclass of :class:`~magsag.lakehouse.clickhouse.backend.ClickHouseBackend` sends each write to a
SQLite hot store and then does what production does: export the store's days to a lake
(Parquet + manifest, via tests/lake_builder.py; a day whose rows changed gets a new file
replacing the old one) and run the real loader, which reloads exactly the changed days.
Every read is the unmodified ClickHouse backend's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from datetime import date
from typing import Any

from magsag.backends.arrow import events_table, runs_table
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS, Event, Run, day_of_us
from magsag.backends.sqlite.store import SQLiteStorageBackend
from magsag.lakehouse import layout
from magsag.lakehouse.clickhouse.backend import ClickHouseBackend
from magsag.lakehouse.clickhouse.load import load_lake
from magsag.lakehouse.objstore import Lake
from magsag.lakehouse.settings import StorageSettings

from tests.lake_builder import write_table

_TS = {"events": EVENT_COLUMNS.index("ts"), "runs": RUN_COLUMNS.index("started_at")}


class LakeLoadedClickHouse(ClickHouseBackend):
    """Writes: SQLite -> lake -> ``load_lake``. Reads: inherited, unchanged."""

    def __init__(self, settings: StorageSettings, hot: SQLiteStorageBackend, lake: Lake):
        super().__init__(settings)
        self.hot, self.lake = hot, lake
        self._digests: dict[tuple[str, date], str] = {}
        self._syncs = 0

    async def initialize(self) -> None:
        await self.hot.initialize()
        await super().initialize()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self.hot.close()

    # ------------------------------------------------------------ writes
    async def _append_validated(self, events: list[Event]) -> int:
        n = await self.hot._append_validated(events)
        await self.sync()
        return n

    async def _create_run(self, run: Run, explicit_start: bool) -> dict[str, Any]:
        stored = await self.hot._create_run(run, explicit_start)
        await self.sync()
        return stored

    async def _update_run(self, run_id: str, *args: Any) -> dict[str, Any]:
        stored = await self.hot._update_run(run_id, *args)
        await self.sync()
        return stored

    async def _upsert_runs(self, batch: list[Run]) -> int:
        n = await self.hot._upsert_runs(batch)
        await self.sync()
        return n

    # -------------------------------------------------------------- sync
    async def sync(self) -> None:
        """Tier every changed day of the hot store into the lake, then load the lake."""
        ev_sql = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
        run_sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        events, runs = await self.hot.read(lambda c: (c.execute(ev_sql).fetchall(), c.execute(run_sql).fetchall()))
        if await asyncio.to_thread(self._export, {"events": events, "runs": runs}):
            await asyncio.to_thread(load_lake, self.engine, self.lake)

    def _export(self, rows: dict[str, list[tuple[Any, ...]]]) -> bool:
        self._syncs += 1
        changed = False
        for dataset, dataset_rows in rows.items():
            by_day: dict[date, list[tuple[Any, ...]]] = defaultdict(list)
            for r in dataset_rows:
                by_day[day_of_us(r[_TS[dataset]])].append(tuple(r))
            for day, day_rows in by_day.items():
                day_rows.sort(key=repr)
                digest = hashlib.sha256(repr(day_rows).encode()).hexdigest()
                if self._digests.get((dataset, day)) == digest:
                    continue
                self._replace_day(dataset, day)
                table = events_table(day_rows) if dataset == "events" else runs_table(day_rows)
                write_table(self.lake, dataset, day, table, job_id=f"sync{self._syncs}")
                self._digests[(dataset, day)] = digest
                changed = True
        return changed

    def _replace_day(self, dataset: str, day: date) -> None:
        for rel in (layout.partition_dir(dataset, day), layout.manifest_dir(dataset, day)):
            path = self.lake.path(rel)
            if self.lake.fs.exists(path):
                self.lake.fs.rm(path, recursive=True)
