"""Fixtures of the query-layer tests: the same demo data all hot, and tiered (split) into a lake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.base import StorageBackend
from magsag.backends.schema import to_us
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.settings import StorageSettings, load_settings
from magsag.lakehouse.tiered_backend import TieredBackend

from magsag.ingest.demo import load_demo
from tests.conftest import make_postgres, make_sqlite
from tests.tier_sim import every_other_event, kind_of, move_rows, ts_before

END = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAYS = 6
RUNS_PER_DAY = 3
SEED = 5
# Days END-6 .. END-4 go to the lake whole, END-3 is split (every other event), the rest stays hot.
WHOLE_BEFORE = datetime(2026, 3, 7, tzinfo=UTC)
SPLIT_BEFORE = WHOLE_BEFORE + timedelta(days=1)


@dataclass
class Store:
    backend: TieredBackend
    settings: StorageSettings
    env: dict[str, str]


@dataclass
class Pair:
    """The same data twice: ``hot`` keeps everything hot, ``tiered`` has half of it in a lake."""

    kind: str
    hot: Store
    tiered: Store
    moved: tuple[int, int]


def _settings(env: dict[str, str]) -> StorageSettings:
    kw = {k.removeprefix("MAGSAG_STORAGE_").lower(): v for k, v in env.items() if k.startswith("MAGSAG_STORAGE_")}
    return load_settings(**kw)


async def tier_half(backend: StorageBackend, lake_url: str) -> tuple[int, int]:
    """Move the older half of the demo data to the lake: whole days, then one split day."""
    kind = kind_of(backend)
    lake = open_lake(lake_url)
    whole = ts_before("ts", to_us(WHOLE_BEFORE), kind)
    split = f"({ts_before('ts', to_us(SPLIT_BEFORE), kind)} AND {every_other_event()})"
    runs = f"{ts_before('started_at', to_us(SPLIT_BEFORE), kind)} AND status <> 'running'"
    return await move_rows(backend, lake, f"{whole} OR {split}", runs)


@pytest.fixture(params=["sqlite", "postgres"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    make = make_sqlite if request.param == "sqlite" else make_postgres
    stores, cleanups = [], []
    for name in ("hot", "tiered"):
        folder = tmp_path / name
        folder.mkdir()
        hot, env, cleanup = make(folder)
        cleanups.append(cleanup)
        env = {**env, "MAGSAG_STORAGE_LAKE_URL": str(folder / "lake")}
        backend = TieredBackend(hot, lake_url=env["MAGSAG_STORAGE_LAKE_URL"])
        await backend.initialize()
        await load_demo(backend, days=DAYS, runs_per_day=RUNS_PER_DAY, seed=SEED, end=END)
        stores.append(Store(backend, _settings(env), env))
    moved = await tier_half(stores[1].backend, stores[1].env["MAGSAG_STORAGE_LAKE_URL"])
    try:
        yield Pair(request.param, stores[0], stores[1], moved)
    finally:
        for s in stores:
            await s.backend.close()
        for c in cleanups:
            if c is not None:
                await c()


def strip_tier(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("tier", "score")} for r in rows]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A small demo SQLite store with its two older days moved to a lake (built once per module).

    Runs started before the cut are in the lake; one later run has half its events in
    the lake (split)."""
    import asyncio

    from magsag.backends.sqlite.store import SQLiteStorageBackend
    from magsag.lakehouse.objstore import open_lake

    from magsag.ingest.demo import load_demo

    root = tmp_path_factory.mktemp("guard")
    db, lake = root / "hot.db", root / "lake"

    async def build() -> None:
        hot = SQLiteStorageBackend(db)
        await hot.initialize()
        await load_demo(hot, days=4, runs_per_day=2, seed=3, end=END)
        cut = int(datetime(2026, 3, 8, tzinfo=UTC).timestamp() * 1_000_000)
        split = f"run_id = (SELECT min(run_id) FROM events WHERE ts >= {cut}) AND {every_other_event()}"
        await move_rows(
            hot, open_lake(str(lake)), f"ts < {cut} OR ({split})", f"started_at < {cut} AND status <> 'running'"
        )
        await hot.close()

    asyncio.run(build())
    (root / "secret.txt").write_text("do not read me\n")
    return {"MAGSAG_STORAGE_DB_PATH": str(db), "MAGSAG_STORAGE_LAKE_URL": str(lake), "root": str(root)}
