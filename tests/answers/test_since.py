"""Issue 13, item 15: --since means "newer than" everywhere; archive's cut-off is --older-than
(the specification's --since still works there and means the same)."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import magsag


def test_archive_older_than_and_its_since_alias(tmp_path: Path) -> None:
    env = {"MAGSAG_STORAGE_BACKEND": "sqlite", "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db")}
    assert magsag("data", "demo", "--days", "6", "--runs-per-day", "2", "--json", env=env).code == 0
    dest = str(tmp_path / "archive")
    new = magsag("data", "archive", dest, "--older-than", "3", "--dry-run", "--json", env=env)
    old = magsag("data", "archive", dest, "--since", "3", "--dry-run", "--json", env=env)
    assert new.code == old.code == 0, new.err + old.err
    assert new.json()["plan"] == old.json()["plan"] and new.json()["plan"]
    assert all(p["day"] < "2026-12-04" for p in new.json()["plan"])  # older than 3 days before 2026-12-07
    help_text = magsag("data", "archive", "--help").out
    assert "--older-than" in help_text and "--since" in help_text


def test_since_is_newer_than_in_query_and_search(tmp_path: Path) -> None:
    env = {"MAGSAG_STORAGE_BACKEND": "sqlite", "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db")}
    assert magsag("data", "demo", "--days", "6", "--runs-per-day", "2", "--json", env=env).code == 0
    runs = magsag("data", "query", "--since", "2d", "--limit", "100", "--json", env=env).json()
    assert runs and all(r["started_at"] >= "2026-12-05T06:20" for r in runs)
    hits = magsag("data", "search", "start", "--since", "2d", "--limit", "100", "--json", env=env).json()
    assert hits and all(h["ts"] >= "2026-12-05T06:20" for h in hits)
