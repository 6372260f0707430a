"""Test helper: write a lake directly (Parquet files + manifest entries) from rows.

For tests of readers (query layer, ClickHouse load) that need a lake without going
through the tiering job. Files follow lakehouse/layout.py and carry manifest entries,
exactly as the tiering job writes them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from typing import Any

import pyarrow as pa
from magsag.backends.arrow import events_table, runs_table
from magsag.backends.schema import Event, Run, day_of_us
from magsag.lakehouse import manifest
from magsag.lakehouse.lakewriter import SORT_KEYS, PartitionWriter, publish
from magsag.lakehouse.objstore import Lake, open_lake

_SORT = {ds: [(c, "ascending") for c in keys] for ds, keys in SORT_KEYS.items()}


def _row(x: Any) -> tuple[Any, ...]:
    return x.row() if isinstance(x, Event | Run) else tuple(x)


def write_table(
    lake: Lake, dataset: str, day: date, table: pa.Table, job_id: str, seq: int = 0
) -> manifest.ManifestEntry:
    """Write one sorted Parquet file of ``table`` into the partition and commit its entry
    (through the same writer and publish step as the tiering job)."""
    table = table.sort_by(_SORT[dataset])
    with PartitionWriter(lake, dataset, day, job_id, seq) as writer:
        writer.write(table)
        staged = writer.finish()
    return publish(lake, staged)


def write_lake(
    lake: Lake | str,
    events: Iterable[Event | tuple[Any, ...]] = (),
    runs: Iterable[Run | tuple[Any, ...]] = (),
    *,
    files_per_day: int = 1,
    job_id: str = "fixture",
) -> dict[str, dict[date, int]]:
    """Write events by ``ts`` day and runs by ``started_at`` day; return rows per dataset and day."""
    if isinstance(lake, str):
        lake = open_lake(lake)
    out: dict[str, dict[date, int]] = {"events": {}, "runs": {}}
    for dataset, rows, ts_index, to_table in (
        ("events", events, 1, events_table),
        ("runs", runs, 4, runs_table),
    ):
        by_day: dict[date, list[tuple[Any, ...]]] = defaultdict(list)
        for r in rows:
            t = _row(r)
            by_day[day_of_us(t[ts_index])].append(t)
        for day, day_rows in sorted(by_day.items()):
            n = max(1, min(files_per_day, len(day_rows)))
            for seq in range(n):
                write_table(lake, dataset, day, to_table(day_rows[seq::n]), job_id, seq)
            out[dataset][day] = len(day_rows)
    return out
