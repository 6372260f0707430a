"""Helpers of the tiering tests: the demo data, reading hot store and lake, comparing them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from magsag.backends.arrow import event_rows, run_rows
from magsag.backends.base import StorageBackend
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS, US_PER_DAY, to_us
from magsag.lakehouse import layout
from magsag.lakehouse.objstore import Lake

from magsag.ingest.demo import load_demo

END = datetime(2026, 3, 10, 12, tzinfo=UTC)  # "now" of every tiering test
HOT_DAYS = 1  # cutoff 2026-03-09T00:00Z: days 03-06 .. 03-08 are tierable
CUTOFF_US = to_us(datetime(2026, 3, 9, tzinfo=UTC))
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HotCase:
    """A fresh hot store, the env that selects it, and raw readers of its rows."""

    kind: str
    backend: StorageBackend
    env: dict[str, str]
    event_rows: Callable[[], Awaitable[list[tuple[Any, ...]]]]
    run_rows: Callable[[], Awaitable[list[tuple[Any, ...]]]]
    cleanup: Callable[[], Awaitable[None]] | None = None
    closed: bool = field(default=False)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.backend.close()
            if self.cleanup is not None:
                await self.cleanup()


async def load(case: HotCase, *, days: int = 4, runs_per_day: int = 3, seed: int = 11) -> None:
    await load_demo(case.backend, days=days, runs_per_day=runs_per_day, seed=seed, end=END)


def lake_events(lake: Lake) -> list[tuple[Any, ...]]:
    """Every event in the lake, read with pyarrow by plain directory/glob (no manifest)."""
    return event_rows(_dataset(lake, layout.EVENTS))


def lake_runs(lake: Lake) -> list[tuple[Any, ...]]:
    return run_rows(_dataset(lake, layout.RUNS))


def _dataset(lake: Lake, dataset: str) -> pa.Table:
    base = lake.path(dataset)
    if not lake.is_local:
        lake.fs.invalidate_cache()
    if not lake.fs.exists(base):
        cols = EVENT_COLUMNS if dataset == layout.EVENTS else RUN_COLUMNS
        from magsag.backends.schema import event_arrow_schema, run_arrow_schema

        schema = event_arrow_schema() if dataset == layout.EVENTS else run_arrow_schema()
        return schema.empty_table().select(list(cols))
    files = sorted(lake.fs.glob(lake.path(layout.data_glob(dataset))))
    d = ds.dataset(files, format="parquet", filesystem=lake.fs, partitioning="hive", partition_base_dir=base)
    return d.to_table()


def multiset(rows: list[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    return Counter(rows)


def days_of(rows: list[tuple[Any, ...]], ts_index: int = 1) -> set[Any]:
    from magsag.backends.schema import day_of_us

    return {day_of_us(r[ts_index]) for r in rows}


def old(rows: list[tuple[Any, ...]], ts_index: int = 1) -> list[tuple[Any, ...]]:
    return [r for r in rows if r[ts_index] < CUTOFF_US]


def day_us(day_offset: int) -> int:
    """Microseconds of noon on the day ``day_offset`` days before END's day."""
    return (to_us(END) // US_PER_DAY - day_offset) * US_PER_DAY + 12 * 3600 * 1_000_000


def run_tier_process(
    env: dict[str, str], *args: str, hot_days: int = HOT_DAYS, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m tests.tier.tier_proc`` (now = END) with ``env`` on top of this environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAGSAG_STORAGE_", "MAGSAG_LAKE_FAULT"))}
    pp = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "tests.tier.tier_proc", "--now", END.isoformat(), "--hot-days", str(hot_days), *args],
        env={**base, **env, "PYTHONPATH": pp},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
