"""Issue 13, item 8: `init --no-fts` sticks, and search without the index has the same
whole-word semantics as with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import magsag

QUERIES = ["rate limit", "time", "timed out", "RETRY", "429", "tool", "Gateway 502", "t1"]


def _fts(db: str) -> bool:
    return magsag("data", "init", "--db-path", db, "--json").json()["fts"]


def test_no_fts_sticks_and_fts_comes_back(tmp_path: Path) -> None:
    db = str(tmp_path / "hot.db")
    assert magsag("data", "init", "--no-fts", "--db-path", db, "--json").json()["fts"] is False
    assert magsag("data", "demo", "--days", "2", "--runs-per-day", "3", "--db-path", db, "--json").code == 0
    assert _fts(db) is False  # the next commands keep the store's choice
    assert magsag("data", "init", "--fts", "--db-path", db, "--json").json()["fts"] is True
    assert _fts(db) is True


@pytest.mark.parametrize("query", QUERIES)
def test_same_words_with_and_without_the_index(tmp_path: Path, query: str) -> None:
    found = {}
    for mode in ("--fts", "--no-fts"):
        db = str(tmp_path / f"{mode}.db")
        assert magsag("data", "init", mode, "--db-path", db, "--json").code == 0
        assert magsag("data", "demo", "--days", "3", "--runs-per-day", "10", "--db-path", db, "--json").code == 0
        assert _fts(db) is (mode == "--fts")
        res = magsag("data", "search", query, "--limit", "1000", "--db-path", db, "--json")
        found[mode] = sorted(h["event_id"] for h in res.json()) if res.code == 0 else []
    assert found["--fts"] == found["--no-fts"]
    if query == "time":  # a whole word: "timeout"/"timed" do not match it
        assert found["--fts"] == []
