"""Issue 13, item 20: `query --run-id MAG --tree`, `query --parent RUN` and get_run_tree()."""

from __future__ import annotations

from pathlib import Path

import pytest
from magsag.lakehouse.settings import load_settings

from magsag.storage import NotFoundError, get_run_tree
from tests.cli_helpers import magsag


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
    }
    assert magsag("data", "demo", "--days", "4", "--runs-per-day", "4", "--json", env=env).code == 0
    assert magsag("data", "tier", "--hot-days", "2", "--json", env=env).code == 0
    return env


def _sql(env: dict[str, str], q: str) -> list[dict]:  # type: ignore[type-arg]
    res = magsag("data", "sql", q, "--json", env=env)
    assert res.code == 0, res.err
    return res.json()


async def test_the_tree_in_the_api_and_the_cli(env: dict[str, str]) -> None:
    import asyncio

    mags = await asyncio.to_thread(
        _sql, env, "SELECT run_id, tier FROM runs WHERE parent_run_id IS NULL AND status <> 'running' ORDER BY run_id"
    )
    assert {m["tier"] for m in mags} == {"hot", "lake"}
    settings = load_settings(db_path=env["MAGSAG_STORAGE_DB_PATH"], lake_url=env["MAGSAG_STORAGE_LAKE_URL"])
    for mag in (mags[0], mags[-1]):
        tree = await get_run_tree(mag["run_id"], settings)
        kids = await asyncio.to_thread(
            _sql, env, f"SELECT run_id FROM runs WHERE parent_run_id = '{mag['run_id']}' ORDER BY run_id"
        )
        assert sorted(c["run_id"] for c in tree["children"]) == [k["run_id"] for k in kids] and kids
        own_plus = tree["cost_usd"] + sum(c["cost_usd"] for c in tree["children"])
        assert tree["total_cost_usd"] == pytest.approx(own_plus, abs=1e-5)
        assert all(c["children"] == [] and c["parent_run_id"] == mag["run_id"] for c in tree["children"])
        cli = await asyncio.to_thread(magsag, "data", "query", "--run-id", mag["run_id"], "--tree", env=env)
        assert cli.code == 0 and all(k["run_id"] in cli.out for k in kids) and "with delegates $" in cli.out
        as_json = await asyncio.to_thread(
            magsag, "data", "query", "--run-id", mag["run_id"], "--tree", "--json", env=env
        )
        assert as_json.json() == tree
        by_parent = await asyncio.to_thread(magsag, "data", "query", "--parent", mag["run_id"], "--json", env=env)
        assert sorted(r["run_id"] for r in by_parent.json()) == [k["run_id"] for k in kids]
    with pytest.raises(NotFoundError):
        await get_run_tree("mag-nope", settings)


def test_tree_usage_errors(env: dict[str, str]) -> None:
    res = magsag("data", "query", "--tree", env=env)
    assert res.code == 2 and "--tree needs --run-id" in res.err
    res = magsag("data", "query", "--run-id", "mag-nope", "--tree", env=env)
    assert res.code == 1 and "not found" in res.err
    res = magsag("data", "query", "--parent", "mag-nope", env=env)
    assert res.code == 1
