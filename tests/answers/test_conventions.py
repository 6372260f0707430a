"""Issue 13, everyday conventions: items 14 (-h, flags, --status case, empty search),
17 (compact on a missing day) and 21 (documented exit code of an unexpected exception)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import magsag

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
    }
    assert magsag("data", "demo", "--days", "3", "--runs-per-day", "3", "--json", env=env).code == 0
    return env


def _one_line(err: str) -> bool:
    return len([ln for ln in err.splitlines() if ln.strip()]) == 1


def test_dash_h_is_help_everywhere() -> None:
    for args in (("-h",), ("data", "-h"), ("data", "query", "-h"), ("data", "clickhouse", "init", "-h")):
        res = magsag(*args)
        assert res.code == 0 and "Usage:" in res.out, args


def test_flags_are_shown_as_flags() -> None:
    out = magsag("data", "query", "--help").out
    line = next(ln for ln in out.splitlines() if "--json" in ln)
    assert "<bool>" not in line and "<bool>" not in out


def test_status_is_case_insensitive_and_checked(env: dict[str, str]) -> None:
    lower = magsag("data", "query", "--status", "succeeded", "--json", env=env)
    upper = magsag("data", "query", "--status", "SUCCEEDED", "--json", env=env)
    assert lower.code == upper.code == 0 and lower.json() == upper.json() and upper.json()
    bad = magsag("data", "query", "--status", "done", env=env)
    assert bad.code == 2 and "--status" in bad.err and _one_line(bad.err)


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_search_is_a_usage_error(env: dict[str, str], query: str) -> None:
    res = magsag("data", "search", query, env=env)
    assert res.code == 2 and "QUERY is empty" in res.err and _one_line(res.err)


def test_compact_on_a_missing_day_says_so(env: dict[str, str]) -> None:
    assert magsag("data", "tier", "--hot-days", "1", "--json", env=env).code == 0
    res = magsag("data", "compact", "--partition", "2026-11-03", env=env)
    assert res.code == 1 and "dt=2026-11-03" in res.err and _one_line(res.err)
    ok = magsag("data", "compact", "--partition", "2026-12-04", "--json", env=env)
    assert ok.code == 0, ok.err


def test_unexpected_backend_exception_has_the_documented_code(env: dict[str, str]) -> None:
    boom = {**env, "MAGSAG_STORAGE_BACKEND": "tests.answers.boom_backend:BoomBackend"}
    res = magsag("data", "query", env=boom)
    assert res.code == 70 and "internal error: RuntimeError: the custom store fell over" in res.err
    assert _one_line(res.err)
    assert "`70` an unexpected internal error" in (ROOT / "docs" / "cli.md").read_text()
