"""A custom backend without optional capabilities: the contract works, every feature that
needs a capability says so in one line (docs/api.md, custom backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from magsag.backends.errors import ConfigError, UnsupportedOperation
from magsag.backends.schema import Event
from magsag.backends.tiering.protocol import tier_source
from magsag.lakehouse import query
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.settings import load_settings
from magsag.lakehouse.stats import hot_stats
from magsag.lakehouse.tiered_backend import TieredBackend

from magsag.otel import watermark
from magsag.otel.select import START, Selection, finished_runs
from magsag.serve import activity
from tests.contract.legacy_backend import LegacyApiBackend
from tests.lake_builder import write_lake

T0 = datetime(2025, 10, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
async def custom(tmp_path: Path) -> AsyncIterator[LegacyApiBackend]:
    store = LegacyApiBackend(tmp_path / "custom.db")
    async with store:
        await store.append_event("r1", "agent", "metric", T0, payload={"name": "m", "value": 3})
        await store.update_run("r1", status="succeeded", ended_at=T0)
        yield store


async def test_features_needing_a_capability_refuse_in_one_line(custom: LegacyApiBackend, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOperation, match=r"does not support tiering .*'tiering' capability"):
        tier_source(custom)
    with pytest.raises(UnsupportedOperation, match="'export_state' capability; the legacy-api backend"):
        await watermark.read(custom, "http://collector#p")
    lake = open_lake(str(tmp_path / "lake"))
    write_lake(lake, [Event.create("r0", "agent", "metric", T0, payload={"name": "m", "value": 1})])
    tiered = TieredBackend(custom, lake)
    with pytest.raises(UnsupportedOperation, match=r"query_metrics over hot \+ lake needs .*'metric_samples'"):
        await tiered.query_metrics("m")


async def test_features_degrade_without_a_capability(custom: LegacyApiBackend) -> None:
    stats = await hot_stats(custom)
    assert (stats["backend"], stats["partitions"]) == ("legacy-api", [])
    assert await activity.read(custom, 0) == activity.Activity()
    (run,) = await finished_runs(custom, Selection(agent="agent"), START, 10)  # list_runs fallback
    assert run["run_id"] == "r1"


def test_query_views_name_the_missing_capability(tmp_path: Path) -> None:
    settings = load_settings(
        backend="tests.contract.legacy_backend:LegacyApiBackend",
        db_path=tmp_path / "custom.db",
        lake_url=str(tmp_path / "lake"),
    )
    with pytest.raises(ConfigError, match=r"'duckdb_source' capability; the legacy-api backend .* include_hot=False"):
        query.connect(settings)
    con = query.connect(settings, include_hot=False)
    try:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (0,)
    finally:
        query.close(con)
