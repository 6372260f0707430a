"""Test helper: write a lake directly (Parquet files + manifest entries) from rows.

For tests of readers (query layer, ClickHouse load) that need a lake without going
through the tiering job. Files follow lakehouse/layout.py and carry manifest entries,
exactly as the tiering job writes them.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backends.arrow import events_table, runs_table
from backends.schema import Event, Run, day_of_us, iso_from_us, to_us
from lakehouse import layout, manifest
from lakehouse.objstore import Lake, open_lake

_SORT = {
    "events": [("agent_slug", "ascending"), ("run_id", "ascending"), ("ts", "ascending")],
    "runs": [("agent_slug", "ascending"), ("started_at", "ascending"), ("run_id", "ascending")],
}
_TS = {"events": "ts", "runs": "started_at"}


def _row(x: Any) -> tuple[Any, ...]:
    return x.row() if isinstance(x, Event | Run) else tuple(x)


def write_table(
    lake: Lake, dataset: str, day: date, table: pa.Table, job_id: str, seq: int = 0
) -> manifest.ManifestEntry:
    """Write one sorted Parquet file of ``table`` into the partition and commit its entry."""
    table = table.sort_by(_SORT[dataset])
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    rel = layout.data_path(dataset, day, job_id, seq)
    lake.fs.makedirs(lake.path(layout.partition_dir(dataset, day)), exist_ok=True)
    lake.fs.pipe_file(lake.path(rel), data)
    ts = table.column(_TS[dataset])
    lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
    entry = manifest.ManifestEntry(
        dataset=dataset,
        dt=day.isoformat(),
        path=rel,
        rows=table.num_rows,
        bytes=len(data),
        min_ts=iso_from_us(to_us(lo)) if lo else None,
        max_ts=iso_from_us(to_us(hi)) if hi else None,
        checksum=manifest.checksum_bytes(data),
        job_id=job_id,
        committed_at=manifest.now_iso(),
    )
    manifest.write_entry(lake, entry)
    return entry


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
