"""Issue 13, item 7: `tier --lake` to another lake than the configured one is refused
(nothing moves out of sight); the configured lake, named explicitly, still works."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import magsag


def test_tier_to_another_lake_is_refused(tmp_path: Path) -> None:
    env = {
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
    }
    assert magsag("data", "demo", "--days", "4", "--runs-per-day", "3", "--json", env=env).code == 0
    count = "SELECT count(*) AS n FROM events"
    before = magsag("data", "sql", count, "--json", env=env).json()[0]["n"]
    other = str(tmp_path / "other")
    res = magsag("data", "tier", "--hot-days", "1", "--lake", other, env=env)
    assert res.code == 2 and "not the configured lake" in res.err and "archive" in res.err
    assert not Path(other).exists()
    assert magsag("data", "sql", count, "--json", env=env).json()[0]["n"] == before
    ok = magsag("data", "tier", "--hot-days", "1", "--lake", str(tmp_path / "lake" / ""), "--json", env=env)
    assert ok.code == 0 and ok.json()["days"] > 0, ok.err
    assert magsag("data", "sql", count, "--json", env=env).json()[0]["n"] == before  # all still visible
