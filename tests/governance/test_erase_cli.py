"""``magsag data delete`` from the command line, and the erase reaching ClickHouse (chDB)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.sqlite.store import SQLiteStorageBackend
from magsag.backends.tiering.protocol import MOVE
from magsag.lakehouse.clickhouse.engines import open_engine
from magsag.lakehouse.clickhouse.load import load_lake
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.tiering.job import run_tier

from tests.cli_helpers import magsag
from tests.clickhouse_helpers import ch_env, new_database
from tests.governance.test_erase import PARENT, SECRET, seed
from tests.tier.helpers import END, HOT_DAYS


def store(tmp_path: Path) -> dict[str, str]:
    return asyncio.run(_store(tmp_path))


async def _store(tmp_path: Path) -> dict[str, str]:
    backend = SQLiteStorageBackend(db_path=tmp_path / "hot.db")
    await backend.initialize()
    try:
        await seed(backend)
        await run_tier(backend, open_lake(str(tmp_path / "lake")), hot_days=HOT_DAYS, now=END, mode=MOVE)
    finally:
        await backend.close()
    return {
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
        "MAGSAG_NOW": END.isoformat(),
    }


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    env = store(tmp_path)
    for args, text in (
        ((), "nothing selected"),
        (("--matching", "ab"), "at least 3 characters"),
        (("--since", "2026-03-09", "--until", "2026-03-08"), "--until must be after --since"),
        (("--since", "yesterday-ish"), "--since: cannot read"),
    ):
        res = magsag("data", "delete", *args, env=env)
        assert res.code == 2, (args, res.err)
        assert text in res.err and len(res.err.strip().splitlines()) == 1 and "Traceback" not in res.err


def test_cli_dry_run_then_erase(tmp_path: Path) -> None:
    env = store(tmp_path)
    dry = magsag("data", "delete", "--matching", SECRET, "--dry-run", "--json", env=env)
    assert dry.code == 0, dry.err
    rep = dry.json()
    assert rep["dry_run"] and rep["job_ids"] == []
    assert rep["hot"]["events"] == 2 and rep["lakes"][0]["events"] == 2
    assert rep["lakes"][0]["partitions"] == ["events/2026-03-08"]
    # the secret itself is never written into the job record or the report
    assert SECRET not in dry.out
    human = magsag("data", "delete", PARENT, "--no-children", env=env)
    assert human.code == 0, human.err
    assert "erased 1 runs and 0 single events" in human.out
    done = magsag("data", "delete", "--resume", env=env)
    assert done.code == 0 and done.out == ""


@pytest.mark.clickhouse
def test_erase_reaches_clickhouse(tmp_path: Path, monkeypatch: Any) -> None:
    env = store(tmp_path)
    db = new_database()
    env.update(ch_env("chdb", db))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from magsag.lakehouse.settings import load_settings

    settings = load_settings()
    lake = open_lake(str(tmp_path / "lake"))
    with open_engine(settings) as engine:
        load_lake(engine, lake)
        assert engine.value(f"SELECT count() FROM {db}.events WHERE position(msg, '9f8e7d6c') > 0") == 1
        try:
            res = magsag("data", "delete", "--matching", SECRET, "--json", env=env)
            assert res.code == 0, res.err
            assert res.json()["clickhouse"]["rows"] == {"events": 2, "runs": 0}
            res = magsag("data", "delete", PARENT, "--json", env=env)
            assert res.code == 0, res.err
            assert res.json()["clickhouse"]["rows"] == {"events": 3, "runs": 3}
            for cond in (
                "position(msg, '9f8e7d6c') > 0",
                "position(payload, '9f8e7d6c') > 0",
                "run_id LIKE 'sag-erase%'",
            ):
                assert engine.value(f"SELECT count() FROM {db}.events WHERE {cond}") == 0
            assert engine.value(f"SELECT count() FROM {db}.runs WHERE run_id LIKE '%erase%'") == 0
            # a later reload from the (rewritten) lake brings nothing back
            load_lake(engine, lake, force=True)
            assert engine.value(f"SELECT count() FROM {db}.events WHERE position(payload, '9f8e7d6c') > 0") == 0
            assert engine.value(f"SELECT count() FROM {db}.events WHERE msg = 'harmless neighbour line'") == 1
        finally:
            engine.command(f"DROP DATABASE IF EXISTS `{db}`")


def test_guard_survives_the_tiering_rebuild(tmp_path: Path) -> None:
    """The SQLite tier delete may rebuild ``events`` (DROP + RENAME drops triggers): the
    tombstone guard is recreated with the indexes, so erased ids stay refused."""
    from magsag.backends.schema import Event, from_us
    from magsag.lakehouse.settings import load_settings

    from magsag.ingest.demo import load_demo
    from magsag.storage import delete_runs
    from tests.tier.helpers import day_us

    async def go() -> None:
        b = SQLiteStorageBackend(db_path=tmp_path / "hot.db")
        await b.initialize()
        try:
            await seed(b)
            settings = load_settings(lake_url=str(tmp_path / "lake"), clickhouse_path=tmp_path / "no-ch")
            await delete_runs(b, settings, [PARENT + "h"])
            await load_demo(b, days=3, runs_per_day=2, seed=9, end=END)
            rep = await run_tier(b, open_lake(str(tmp_path / "lake")), hot_days=HOT_DAYS, now=END, mode=MOVE)
            assert rep.events > 0
            triggers = await b.read(
                lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
            )
            assert "events_tombstoned" in triggers
            late = Event.create(PARENT + "h", "erase-mag", "log", from_us(day_us(0)), message="late copy")
            await b.append_events([late])
            n = await b.read(lambda c: c.execute("SELECT count(*) FROM events WHERE run_id = ?", (PARENT + "h",)))
            assert n.fetchone()[0] == 0
        finally:
            await b.close()

    asyncio.run(go())
