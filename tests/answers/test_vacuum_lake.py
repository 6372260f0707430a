"""Issue 13, item 5: vacuum never silently deletes history that is not in the lake."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import magsag


def test_vacuum_counts_days_not_in_the_lake_and_needs_force(tmp_path: Path) -> None:
    env = {
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
    }
    assert magsag("data", "demo", "--days", "5", "--runs-per-day", "3", "--json", env=env).code == 0
    before = magsag("data", "sql", "SELECT count(*) AS n FROM events", "--json", env=env).json()[0]["n"]
    dry = magsag("data", "vacuum", "--hot-days", "2", "--dry-run", env=env)
    assert dry.code == 0 and "3 of these days are not in the lake" in dry.err and "would exist nowhere" in dry.err
    refused = magsag("data", "vacuum", "--hot-days", "2", env=env)
    assert refused.code == 1 and "3 of the days to delete are not in the lake" in refused.err
    assert "--force" in refused.err and len(refused.err.strip().splitlines()) == 1
    after = magsag("data", "sql", "SELECT count(*) AS n FROM events", "--json", env=env).json()[0]["n"]
    assert after == before  # nothing deleted
    # tiered days are in the lake: vacuum goes ahead without --force
    assert magsag("data", "tier", "--hot-days", "2", "--json", env=env).code == 0
    ok = magsag("data", "vacuum", "--hot-days", "2", "--json", env=env)
    assert ok.code == 0 and ok.json()["not_in_lake"] == []
    # a day never tiered still needs --force, and then it is gone
    one = magsag("data", "vacuum", "--hot-days", "1", "--json", env=env)
    assert one.code == 1 and one.json()["not_in_lake"] == ["2026-12-05"]
    forced = magsag("data", "vacuum", "--hot-days", "1", "--force", "--json", env=env)
    assert forced.code == 0 and forced.json()["events_deleted"] > 0 and forced.json()["not_in_lake"] == ["2026-12-05"]
