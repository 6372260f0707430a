"""The CLI over both tiers: data query, data search, data sql (formats), data stats."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.cli_helpers import magsag


@pytest.fixture
def env(store: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in store.items() if k.startswith("MAGSAG_")}


def _runs_by_tier(env: dict[str, str]) -> dict[str, list[str]]:
    res = magsag(
        "data",
        "sql",
        "SELECT r.run_id, r.tier AS run_tier, list(DISTINCT e.tier ORDER BY e.tier) AS ev FROM runs r "
        "JOIN events e USING (run_id) GROUP BY ALL ORDER BY r.run_id",
        "--format",
        "json",
        env=env,
    )
    assert res.code == 0, res.err
    out: dict[str, list[str]] = {"hot": [], "lake": [], "split": []}
    for row in res.json():
        key = "split" if len(row["ev"]) == 2 else row["ev"][0]
        out[key].append(row["run_id"])
    return out


def test_query_run_id_finds_hot_tiered_and_split_runs(env: dict[str, str]) -> None:
    kinds = _runs_by_tier(env)
    assert all(kinds.values()), kinds
    for where, ids in kinds.items():
        run_id = ids[0]
        res = magsag("data", "query", "--run-id", run_id, "--json", env=env)
        assert res.code == 0, res.err
        data = res.json()
        assert data["run"]["run_id"] == run_id and data["tier"]["where"] == where
        assert [e["ts"] for e in data["events"]] == sorted(e["ts"] for e in data["events"])
        assert {e["tier"] for e in data["events"]} == ({"hot", "lake"} if where == "split" else {where})
        table = magsag("data", "query", "--run-id", run_id, env=env)
        assert table.code == 0 and run_id in table.out and where in table.out
    missing = magsag("data", "query", "--run-id", "mag-nothere", env=env)
    assert missing.code == 1 and "not found" in missing.err and "Traceback" not in missing.err


def test_query_lists_runs_of_both_tiers(env: dict[str, str]) -> None:
    res = magsag("data", "query", "--limit", "1000", "--json", env=env)
    runs = res.json()
    assert res.code == 0 and runs == sorted(runs, key=lambda r: (r["started_at"], r["run_id"]), reverse=True)
    total = magsag("data", "sql", "SELECT count(*) AS n FROM runs", "--format", "json", env=env).json()[0]["n"]
    assert len(runs) == total


def test_search_covers_the_lake_and_says_the_tier(env: dict[str, str]) -> None:
    res = magsag("data", "search", "delegation", "--limit", "1000", "--json", env=env)
    assert res.code == 0, res.err
    hits = res.json()
    assert {h["tier"] for h in hits} == {"hot", "lake"}
    recent = magsag("data", "search", "delegation", "--since", "2026-03-08", "--limit", "1000", "--json", env=env)
    assert recent.code == 0 and "hot" in {h["tier"] for h in recent.json()}
    assert all(h["ts"] >= "2026-03-08" for h in recent.json())
    old = magsag("data", "search", "delegation", "--until", "2026-03-08", "--limit", "1000", "--json", env=env)
    assert old.code == 0 and {h["tier"] for h in old.json()} == {"lake"}
    assert all(h["ts"] < "2026-03-08" for h in old.json())
    assert len(recent.json()) + len(old.json()) == len(hits)
    table = magsag("data", "search", "delegation", "--limit", "5", env=env)
    assert table.code == 0 and "tier" in table.out
    none = magsag("data", "search", "zzzznotthere", env=env)
    assert none.code == 1


def test_search_raw_on_the_lake(env: dict[str, str]) -> None:
    res = magsag(
        "data", "search", "delegation_start OR delegation_complete", "--raw", "--limit", "1000", "--json", env=env
    )
    assert res.code == 0 and any(h["tier"] == "lake" for h in res.json())
    bad = magsag("data", "search", '"unterminated AND (', "--raw", env=env)
    assert bad.code == 2 and "malformed" in bad.err and "Traceback" not in bad.err


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "table"])
def test_sql_formats(env: dict[str, str], tmp_path: Path, fmt: str) -> None:
    sql = "SELECT run_id, tier, started_at, tags, dt FROM runs ORDER BY run_id LIMIT 5"
    out = tmp_path / f"out.{fmt}"
    res = magsag("data", "sql", sql, "--format", fmt, "--output", str(out), env=env)
    assert res.code == 0, res.err
    assert "wrote 5 rows" in res.err
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
        assert len(rows) == 5 and rows[0]["tier"] in ("hot", "lake") and json.loads(rows[0]["tags"])
    elif fmt == "json":
        rows = json.loads(out.read_text())
        assert len(rows) == 5 and rows[0]["started_at"].endswith("+00:00") and len(rows[0]["dt"]) == 10
    elif fmt == "parquet":
        table = pq.read_table(out)
        assert table.num_rows == 5 and table.column_names == ["run_id", "tier", "started_at", "tags", "dt"]
    else:
        assert "run_id" in out.read_text() or out.read_text().count("\n") >= 5
    stdout = magsag("data", "sql", sql, "--format", fmt if fmt != "parquet" else "csv", env=env)
    assert stdout.code == 0 and stdout.out.strip()


def test_sql_options_are_checked(env: dict[str, str]) -> None:
    res = magsag("data", "sql", "SELECT 1", "--format", "parquet", env=env)
    assert res.code == 2 and "--output" in res.err
    res = magsag("data", "sql", "SELECT 1", "--format", "xml", env=env)
    assert res.code == 2 and "--format" in res.err


def test_stats_per_tier_and_partition(env: dict[str, str]) -> None:
    res = magsag("data", "stats", "--json", env=env)
    assert res.code == 0, res.err
    stats: dict[str, Any] = res.json()
    hot, lake = stats["hot"], stats["lake"]
    assert hot["events"] > 0 and hot["partitions"] and all(p["events"] >= 0 for p in hot["partitions"])
    ev = lake["datasets"]["events"]
    assert lake["manifest"] is True and ev["rows"] > 0 and ev["files"] == len(ev["partitions"])
    for p in ev["partitions"]:
        assert p["rows"] > 0 and p["bytes"] > 0 and p["compression"] > 0 and p["oldest"] <= p["newest"]
        assert p["small_files"] is False
    counts = magsag("data", "sql", "SELECT tier, count(*) AS n FROM events GROUP BY 1", "--format", "json", env=env)
    by_tier = {r["tier"]: r["n"] for r in counts.json()}
    assert by_tier == {"hot": hot["events"], "lake": ev["rows"]}
    table = magsag("data", "stats", env=env)
    assert table.code == 0 and "lake events" in table.out and "hot" in table.out


def test_stats_flags_small_files(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from magsag.backends.schema import Event

    from tests.lake_builder import write_lake

    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    events = [Event.create("r", "a", "log", t0 + timedelta(minutes=i), message=f"m{i}") for i in range(40)]
    lake = tmp_path / "lake"
    write_lake(str(lake), events, files_per_day=4)
    env = {"MAGSAG_STORAGE_LAKE_URL": str(lake), "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db")}
    res = magsag("data", "stats", "--json", env=env)
    assert res.code == 0, res.err
    ev = res.json()["lake"]["datasets"]["events"]
    assert ev["flagged"] == ["2026-01-05"] and ev["partitions"][0]["files"] == 4
    table = magsag("data", "stats", env=env)
    assert "small files" in table.err and "compact" in table.out
