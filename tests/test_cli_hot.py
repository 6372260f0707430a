"""The hot-store commands as a user runs them: output, --json, exit codes, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli_helpers import magsag


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "cli.db")
    assert magsag("data", "init", "--db-path", path).code == 0
    res = magsag("data", "demo", "--days", "3", "--runs-per-day", "5", "--seed", "11", "--db-path", path, "--json")
    assert res.code == 0, res.err
    summary = res.json()
    assert summary["events"] > 100 and summary["runs"] >= 15
    return path


def test_init_reports_store(tmp_path: Path) -> None:
    path = tmp_path / "new" / "store.db"
    res = magsag("data", "init", "--db-path", str(path), "--json")
    assert res.code == 0
    info = res.json()
    assert info["backend"] == "sqlite" and info["fts"] is True and info["events"] == 0
    assert path.exists()
    assert magsag("data", "init", "--db-path", str(path), "--no-fts", "--json").json()["fts"] is False


def test_demo_is_deterministic_and_idempotent(db: str) -> None:
    again = magsag("data", "demo", "--days", "3", "--runs-per-day", "5", "--seed", "11", "--db-path", db, "--json")
    assert again.code == 0 and again.json()["new_events"] == 0


def test_query_lists_runs_and_shows_one(db: str) -> None:
    res = magsag("data", "query", "--db-path", db, "--limit", "4", "--json")
    runs = res.json()
    assert res.code == 0 and len(runs) == 4
    assert runs == sorted(runs, key=lambda r: r["started_at"], reverse=True)
    run_id = next(r["run_id"] for r in runs if r["status"] != "running")
    one = magsag("data", "query", "--db-path", db, "--run-id", run_id, "--json").json()
    assert one["run"]["run_id"] == run_id and one["events"]
    assert [e["ts"] for e in one["events"]] == sorted(e["ts"] for e in one["events"])
    table = magsag("data", "query", "--db-path", db, "--run-id", run_id)
    assert table.code == 0 and run_id in table.out
    failed = magsag("data", "query", "--db-path", db, "--status", "failed", "--limit", "100", "--json").json()
    assert all(r["status"] == "failed" for r in failed)


def test_query_unknown_run_exits_1(db: str) -> None:
    res = magsag("data", "query", "--db-path", db, "--run-id", "mag-00000000")
    assert res.code == 1 and "not found" in res.err and "Traceback" not in res.err


def test_search_quotes_user_text_and_exit_codes(db: str) -> None:
    hits = magsag("data", "search", "artifact written", "--db-path", db, "--json")
    assert hits.code == 0, hits.err  # the demo's agents log every artifact they write
    assert hits.json() and all({"artifact", "written"} <= set(h["msg"].lower().split()) for h in hits.json())
    for hostile in ['"unterminated', "a AND (", "NEAR(", "*"]:
        # quoted as a phrase: FTS5 syntax in user text is plain text, which no demo message holds
        res = magsag("data", "search", hostile, "--db-path", db)
        assert res.code == 1, (hostile, res.err)
        assert res.err.strip() == f"0 matches for {hostile!r}", hostile
    none = magsag("data", "search", "zzzznothing", "--db-path", db)
    assert none.code == 1 and none.err.strip() == "0 matches for 'zzzznothing'"


def test_search_raw_malformed_is_one_clear_line(db: str) -> None:
    res = magsag("data", "search", '"unterminated AND (', "--raw", "--db-path", db)
    assert res.code == 2
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: malformed full-text query")
    assert "without --raw" in lines[0]


def test_vacuum_dry_run_then_real(db: str) -> None:
    dry = magsag("data", "vacuum", "--hot-days", "1", "--dry-run", "--db-path", db, "--json").json()
    assert dry["dry_run"] is True and dry["events_to_delete"] > 0
    assert dry["not_in_lake"]  # nothing was tiered: the old days exist only in the hot store
    refused = magsag("data", "vacuum", "--hot-days", "1", "--db-path", db)
    assert refused.code == 1 and "not in the lake" in refused.err and "--force" in refused.err
    real = magsag("data", "vacuum", "--hot-days", "1", "--force", "--db-path", db, "--json").json()
    assert real["events_deleted"] == dry["events_to_delete"] and real["runs_deleted"] == dry["runs_to_delete"]
    assert magsag("data", "vacuum", "--hot-days", "1", "--db-path", db, "--json").json()["events_deleted"] == 0


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MAGSAG_STORAGE_BACKEND": "mongodb"}, "MAGSAG_STORAGE_BACKEND"),
        ({"MAGSAG_STORAGE_HOT_DAYS": "-3"}, "MAGSAG_STORAGE_HOT_DAYS"),
        ({"MAGSAG_STORAGE_ENABLE_FTS": "maybe"}, "MAGSAG_STORAGE_ENABLE_FTS"),
    ],
)
def test_bad_config_is_one_line_exit_2(env: dict[str, str], needle: str) -> None:
    res = magsag("data", "query", env=env)
    assert res.code == 2
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.err


def test_bad_time_option(db: str) -> None:
    res = magsag("data", "query", "--db-path", db, "--since", "last tuesday")
    assert res.code == 2 and "--since" in res.err


def test_not_a_database_file(tmp_path: Path) -> None:
    bogus = tmp_path / "x.db"
    bogus.write_bytes(b"\x00garbage" * 1000)
    res = magsag("data", "query", "--db-path", str(bogus))
    assert res.code == 2 and re.search(r"error: .*x\.db", res.err)
    assert bogus.read_bytes() == b"\x00garbage" * 1000
