"""A one-day question on a 30-day lake reads one partition, on local disk and on S3.

DuckDB's own profile (EXPLAIN ANALYZE) says how many files each Parquet scan read; the
views must keep Hive partition pruning working through the hot + lake union. The API
path prunes before DuckDB sees the files: the test makes every other day unreadable, so
a read of any other partition would fail.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from magsag.backends.schema import Event, Run, to_us
from magsag.lakehouse import query
from magsag.lakehouse.lakefiles import SnapshotReader
from magsag.lakehouse.tiered_backend import TieredBackend

from tests.lake_builder import write_lake

FIRST = date(2026, 2, 1)
DAYS = 30


def _rows(days: int = DAYS) -> tuple[list[Event], list[Run]]:
    events, runs = [], []
    for d in range(days):
        start = datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=UTC) + timedelta(days=d, hours=3)
        for r in range(3):
            run_id = f"run-{d:02d}-{r}"
            t0 = to_us(start + timedelta(minutes=r))
            runs.append(Run(run_id, f"agent-{r}", None, "succeeded", t0, t0 + 5_000_000, '{"cost_usd":0.5}', ()))
            for i in range(4):
                ts = start + timedelta(minutes=r, seconds=i)
                payload = {"name": "latency_ms", "value": 10 * i + d} if i == 3 else {"server_id": "pg", "tool": "q"}
                events.append(
                    Event.create(
                        run_id,
                        f"agent-{r}",
                        "metric" if i == 3 else "mcp.call",
                        ts,
                        message=f"day {d} step {i} timed out" if i == 1 else f"day {d} step {i}",
                        payload=payload,
                    )
                )
    return events, runs


@pytest.fixture
def lake30(lake_case: Any, tmp_path: Any) -> Any:
    events, runs = _rows()
    write_lake(lake_case.lake, events, runs)
    settings = lake_case.settings.model_copy(update={"db_path": tmp_path / "no-hot.db"})
    return lake_case, settings


def files_read(con: Any, sql: str) -> tuple[int, list[tuple[int, int]]]:
    """Files read by all Parquet scans of the query's profile, and each pruned scan's (kept, listed)."""
    text = con.execute(f"EXPLAIN ANALYZE {sql}").fetchall()[0][1]
    total = [int(n) for n in re.findall(r"Total Files Read:\s*(\d+)", text)]
    pruned = [(int(a), int(b)) for a, b in re.findall(r"Scanning Files:\s*(\d+)/(\d+)", text)]
    assert total, text
    return sum(total), pruned


# Each reads column values (a bare count(*) may be answered from cached footers without a scan).
ONE_DAY = [
    "SELECT count(DISTINCT run_id) FROM events WHERE dt = DATE '2026-02-10'",
    "SELECT count(DISTINCT run_id) FROM lake_events WHERE dt = DATE '2026-02-10'",
    "SELECT server_id, count(*) FROM mcp_calls WHERE dt = DATE '2026-02-10' GROUP BY 1",
    "SELECT count(DISTINCT run_id) FROM runs WHERE dt = DATE '2026-02-10'",
    "SELECT count(*) FROM events WHERE dt BETWEEN DATE '2026-02-10' AND DATE '2026-02-10' AND msg ILIKE '%out%'",
]


def test_one_day_reads_one_partition(lake30: Any) -> None:
    _case, settings = lake30
    con = query.connect(settings, locked=True)
    try:
        for sql in ONE_DAY:
            _check_one_day(con, sql)
    finally:
        query.close(con)


def _check_one_day(con: Any, sql: str) -> None:
    read, pruned = files_read(con, sql)
    assert read == 1, (sql, pruned)
    assert pruned and all(listed == DAYS for _, listed in pruned), sql
    assert query.run_sql(sql, con=con).num_rows >= 1
    everything = sql.replace("dt = DATE '2026-02-10'", "true").replace("BETWEEN", ">= DATE '2000-01-01' OR dt BETWEEN")
    read_all, _ = files_read(con, everything)
    assert read_all == DAYS, sql


async def test_api_reads_only_the_days_asked(lake30: Any) -> None:
    case, settings = lake30
    lake = case.lake
    keep = date(2026, 2, 10)
    for f in SnapshotReader(lake).snapshot().of("events"):
        if f.day != keep:
            lake.fs.pipe_file(lake.path(f.rel), b"not parquet at all")  # any read of it fails
    from magsag.lakehouse.settings import backend_from_settings

    storage = TieredBackend(backend_from_settings(settings), lake_url=settings.lake_url, settings=settings)
    await storage.initialize()
    try:
        since = datetime(2026, 2, 10, tzinfo=UTC)
        until = since + timedelta(days=1)
        hits = await storage.search_text("timed out", since=since, until=until, limit=100)
        assert len(hits) == 3 and {h["tier"] for h in hits} == {"lake"}
        m = await storage.query_metrics("latency_ms", since=since, until=until, aggregation="max")
        assert m["count"] == 3 and m["value"] == 39
        with pytest.raises(Exception, match="lake"):
            await storage.search_text("timed out", limit=100)  # all days: reads the broken files
    finally:
        await storage.close()


def test_polars_prunes_to_the_days_asked(lake30: Any) -> None:
    from magsag.lakehouse import scan_events

    _case, settings = lake30
    lf = scan_events(settings, since="2026-02-10", until="2026-02-11")
    plan = lf.explain()
    assert plan.count("dt=2026-02-10") >= 1
    assert "dt=2026-02-09" not in plan and "dt=2026-02-11" not in plan
    assert lf.collect().height == 12
