"""Item 5: a late event for a run already in the lake (issue 14).

The hot store makes a ``running`` placeholder run for it; the lake's record of the run
stays authoritative (status, metrics, parent) and the run appears once in every answer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import pyarrow.parquet as pq
from magsag.lakehouse.settings import load_settings

from magsag.storage import open_storage
from tests.cli_helpers import magsag
from tests.hostile.conftest import World


def _lake_run(world: World) -> dict:
    """A finished child run of the lake (it has a parent, metrics and an end)."""
    runs = pq.read_table(world.lake / "runs").to_pylist()
    return next(r for r in runs if r["parent_run_id"] and r["status"] != "running")


def _late_event(world: World, run: dict) -> None:
    async def go() -> None:
        settings = load_settings(backend="sqlite", db_path=world.db, lake_url=str(world.lake))
        async with open_storage(settings) as storage:
            await storage.append_event(
                run["run_id"], run["agent_slug"], "artifact", datetime(2026, 3, 10, 17, tzinfo=UTC), message="late"
            )

    asyncio.run(go())
    con = sqlite3.connect(world.db)
    try:  # the hot store made its placeholder
        assert con.execute("SELECT status FROM runs WHERE run_id = ?", [run["run_id"]]).fetchone() == ("running",)
    finally:
        con.close()


def test_the_lake_record_of_a_run_stays_authoritative(world: World) -> None:
    run = _lake_run(world)
    n_runs = magsag("data", "sql", "SELECT count(*) AS n FROM runs", "--format", "json", env=world.env).json()[0]["n"]
    _late_event(world, run)

    shown = magsag("data", "query", "--run-id", run["run_id"], "--json", env=world.env)
    assert shown.code == 0, shown.err
    rec = shown.json()["run"]
    assert rec["status"] == run["status"] and rec["parent_run_id"] == run["parent_run_id"]
    assert rec["metrics"] and rec["ended_at"]
    assert [e["msg"] for e in shown.json()["events"] if e["tier"] == "hot"] == ["late"]

    res = magsag("data", "sql", "SELECT run_id, status FROM runs", "--format", "json", env=world.env)
    assert res.code == 0, res.err
    rows = res.json()
    assert len(rows) == n_runs and len({r["run_id"] for r in rows}) == n_runs
    assert {"run_id": run["run_id"], "status": run["status"]} in rows
    summary = magsag("data", "sql", "SELECT count(*) AS n FROM run_summary", "--format", "json", env=world.env)
    assert summary.json()[0]["n"] == n_runs

    listed = magsag("data", "query", "--limit", "1000", "--json", env=world.env)
    assert listed.code == 0, listed.err
    ids = [r["run_id"] for r in listed.json()]
    assert ids.count(run["run_id"]) == 1 and len(ids) == n_runs
    assert next(r for r in listed.json() if r["run_id"] == run["run_id"])["status"] == run["status"]
    running = magsag("data", "query", "--status", "running", "--limit", "1000", "--json", env=world.env)
    assert run["run_id"] not in {r["run_id"] for r in running.json()}
