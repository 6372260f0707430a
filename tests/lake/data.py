"""Shared helpers of the lake tests: demo rows for one day, writing files, reading back."""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from magsag.backends.arrow import event_rows, events_table, run_rows, runs_table
from magsag.backends.schema import day_of_us
from magsag.lakehouse import lakewriter, manifest
from magsag.lakehouse.objstore import Lake

from magsag.ingest.demo import DemoGenerator

END = datetime(2026, 3, 10, 12, tzinfo=UTC)


def demo(days: int = 3, runs_per_day: int = 12, seed: int = 5) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    events: list[tuple[Any, ...]] = []
    runs: list[tuple[Any, ...]] = []
    for batch in DemoGenerator(days=days, runs_per_day=runs_per_day, seed=seed, end=END):
        events.extend(e.row() for e in batch.events)
        runs.extend(r.row() for r in batch.runs)
    return events, runs


def by_day(rows: Sequence[tuple[Any, ...]], ts_index: int) -> dict[date, list[tuple[Any, ...]]]:
    out: dict[date, list[tuple[Any, ...]]] = {}
    for r in rows:
        out.setdefault(day_of_us(r[ts_index]), []).append(r)
    return dict(sorted(out.items()))


def busiest_day(rows: Sequence[tuple[Any, ...]], ts_index: int = 1) -> tuple[date, list[tuple[Any, ...]]]:
    return max(by_day(rows, ts_index).items(), key=lambda kv: len(kv[1]))


def sorted_table(dataset: str, rows: Sequence[tuple[Any, ...]]) -> pa.Table:
    table = events_table(rows) if dataset == "events" else runs_table(rows)
    return table.sort_by([(c, "ascending") for c in lakewriter.SORT_KEYS[dataset]])


def to_rows(dataset: str, table: pa.Table) -> list[tuple[Any, ...]]:
    return event_rows(table) if dataset == "events" else run_rows(table)


def write_file(
    lake: Lake, dataset: str, day: date, rows: Sequence[tuple[Any, ...]], job_id: str, seq: int = 0, **kw: Any
) -> manifest.ManifestEntry:
    """Write and publish one file of ``rows`` (sorted first) through the real writer."""
    table = sorted_table(dataset, rows)
    with lakewriter.PartitionWriter(lake, dataset, day, job_id, seq, **kw) as w:
        for batch in table.to_batches(max_chunksize=500):
            w.write(batch)
        staged = w.finish()
    return lakewriter.publish(lake, staged)


def read_file(lake: Lake, rel: str) -> pa.Table:
    with lake.fs.open(lake.path(rel), "rb") as f:
        return pq.read_table(f)


def live_rows(lake: Lake, dataset: str, day: date | None = None) -> Counter[tuple[Any, ...]]:
    """The multiset of rows a manifest reader sees (every live entry's file must exist)."""
    if not lake.is_local:
        lake.fs.invalidate_cache()
    out: Counter[tuple[Any, ...]] = Counter()
    for e in manifest.live_entries(lake, dataset, day):
        table = read_file(lake, e.path)
        assert table.num_rows == e.rows, e.path
        out.update(to_rows(dataset, table))
    return out


def httpfs_path() -> str | None:
    import duckdb

    spec = importlib.util.find_spec("duckdb_extension_httpfs")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "extensions" / f"v{duckdb.__version__}"
    found = sorted(p.glob("httpfs.duckdb_extension"))
    return str(found[0]) if found else None


def duckdb_for(lake: Lake) -> Any:
    """A DuckDB connection that reads ``lake.uri(...)`` (httpfs loaded by path for S3, never the network)."""
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    if lake.s3 is not None:
        ext = httpfs_path()
        assert ext, "duckdb-extension-httpfs matching this DuckDB is not installed"
        con.execute(f"LOAD '{ext}'")
        endpoint = (lake.s3.endpoint_url or "").split("://", 1)[-1]
        con.execute(
            "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, URL_STYLE 'path', USE_SSL false)",
            [lake.s3.key, lake.s3.secret, lake.s3.region, endpoint],
        )
    return con
