"""Issue 13, item 3: ``demo`` is repeatable — same seed and window, same ids; a rerun adds nothing.

Also item 4's root cause: ``--runs-per-day`` is true for every day of the window, so a
short demo never leaves its last days empty, whatever the hour it runs at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import magsag

ARGS = ("data", "demo", "--days", "3", "--runs-per-day", "4", "--seed", "9", "--json")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MAGSAG_STORAGE_BACKEND": "sqlite", "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db")}


def _demo(env: dict[str, str], now: str, *more: str) -> dict:  # type: ignore[type-arg]
    res = magsag(*ARGS, *more, env={**env, "MAGSAG_NOW": now})
    assert res.code == 0, res.err
    return res.json()


def test_rerun_later_the_same_day_adds_nothing(env: dict[str, str]) -> None:
    first = _demo(env, "2026-12-07T06:20:00Z")
    assert first["new_events"] == first["events"] > 0
    assert first["to"].startswith("2026-12-07T00:00:00")  # the window ends at today's UTC midnight
    again = _demo(env, "2026-12-07T23:59:00Z")
    assert again["new_events"] == 0 and again["events"] == first["events"] and again["runs"] == first["runs"]
    anchored = _demo(env, "2027-05-01T12:00:00Z", "--until", "2026-12-07")  # any day, the same window
    assert anchored["new_events"] == 0 and anchored["events"] == first["events"]
    same_via_now = _demo(env, "2027-05-01T12:00:00Z", "--now", "2026-12-07T00:00:00Z")
    assert same_via_now["new_events"] == 0
    nxt = _demo(env, "2026-12-08T00:30:00Z")  # the next day: a new window, new activity
    assert nxt["new_events"] > 0


def test_every_day_gets_its_runs(env: dict[str, str]) -> None:
    _demo(env, "2026-12-07T06:20:00Z")
    res = magsag(
        "data",
        "sql",
        "SELECT dt, count(*) AS n FROM runs WHERE parent_run_id IS NULL GROUP BY dt ORDER BY dt",
        "--format",
        "json",
        env=env,
    )
    assert res.code == 0, res.err
    assert [(r["dt"], r["n"]) for r in res.json()] == [("2026-12-04", 4), ("2026-12-05", 4), ("2026-12-06", 4)]


def test_until_is_checked(env: dict[str, str]) -> None:
    res = magsag(*ARGS, "--until", "yesterday-ish", env=env)
    assert res.code == 2 and "--until" in res.err and len(res.err.strip().splitlines()) == 1
