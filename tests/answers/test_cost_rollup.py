"""Issue 13, item 1: one rollup rule for cost, the same in report, views, API and notebooks.

A run's ``cost_usd``/``tokens`` are its own spend; a MAG's ``total_cost_usd``/``total_tokens``
add its delegates' (docs/query.md). Summing ``cost_usd`` over any runs counts each dollar once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from magsag.lakehouse import connect
from magsag.lakehouse.settings import load_settings

from magsag.storage import open_storage
from tests.cli_helpers import magsag


@pytest.fixture
def tiered_demo(tmp_path: Path) -> dict[str, str]:
    env = {
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
    }
    assert magsag("data", "demo", "--days", "4", "--runs-per-day", "6", "--seed", "5", "--json", env=env).code == 0
    res = magsag("data", "tier", "--hot-days", "1", "--json", env=env)
    assert res.code == 0, res.err
    return env


def _settings(env: dict[str, str]):  # type: ignore[no-untyped-def]
    return load_settings(db_path=env["MAGSAG_STORAGE_DB_PATH"], lake_url=env["MAGSAG_STORAGE_LAKE_URL"])


def test_mag_total_is_own_plus_delegates(tiered_demo: dict[str, str]) -> None:
    con = connect(_settings(tiered_demo))
    rows = con.sql("""
        SELECT m.run_id, m.cost_usd, m.total_cost_usd, m.tokens, m.total_tokens,
               sum(s.cost_usd) AS sag_cost, sum(s.tokens) AS sag_tokens
        FROM run_summary m JOIN run_summary s ON s.parent_run_id = m.run_id
        WHERE m.status <> 'running' GROUP BY ALL
    """).fetchall()
    assert len(rows) > 5
    for run_id, cost, total, tokens, total_tokens, sag_cost, sag_tokens in rows:
        assert total == pytest.approx(cost + sag_cost, abs=1e-5), run_id
        assert total_tokens == tokens + sag_tokens, run_id
        assert 0 < cost < total


def test_report_sums_each_dollar_once(tiered_demo: dict[str, str]) -> None:
    res = magsag("data", "report", "--days", "0", "--json", env=tiered_demo)
    assert res.code == 0, res.err
    reported = sum(r["cost_usd"] or 0 for r in res.json()["summary"])
    con = connect(_settings(tiered_demo))
    # the money spent by the runs in the lake, from the rollups: each finished MAG's total, plus
    # the sub-agents whose MAG holds no total (still running, or not in the lake)
    spent = con.sql("""
        WITH lake AS (SELECT * FROM run_summary WHERE tier = 'lake'),
        rolled AS (SELECT run_id FROM lake WHERE parent_run_id IS NULL AND status <> 'running')
        SELECT (SELECT sum(total_cost_usd) FROM lake WHERE run_id IN (SELECT run_id FROM rolled))
             + (SELECT coalesce(sum(cost_usd), 0) FROM lake
                WHERE parent_run_id IS NOT NULL AND parent_run_id NOT IN (SELECT run_id FROM rolled))
    """).fetchone()[0]
    rows = len(res.json()["summary"])
    assert reported == pytest.approx(spent, abs=1e-4 * rows)
    lake_own = con.sql("SELECT sum(cost_usd) FROM run_summary WHERE tier = 'lake'").fetchone()[0]
    assert reported == pytest.approx(lake_own, abs=1e-4 * rows)


async def test_query_metrics_and_views_agree(tiered_demo: dict[str, str]) -> None:
    settings = _settings(tiered_demo)
    con = connect(settings)
    finished = con.sql("SELECT sum(cost_usd), count(*) FROM run_summary WHERE status <> 'running'").fetchone()
    from_events = con.sql("SELECT sum(value) FROM metrics WHERE name = 'cost_usd'").fetchone()[0]
    async with open_storage(settings) as storage:
        api = await storage.query_metrics("cost_usd", aggregation="sum")
    assert api["count"] == finished[1]
    assert api["value"] == pytest.approx(finished[0], rel=1e-9)
    assert from_events == pytest.approx(finished[0], rel=1e-9)
