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

from magsag.ingest.demo import load_demo
from tests.cli_helpers import magsag
from tests.clickhouse_helpers import ch_env, new_database
from tests.governance.test_erase import PARENT, SECRET, seed
from tests.tier.helpers import END, HOT_DAYS, lake_events


def store(tmp_path: Path) -> dict[str, str]:
    return asyncio.run(_store(tmp_path))


async def _store(tmp_path: Path) -> dict[str, str]:
    backend = SQLiteStorageBackend(db_path=tmp_path / "hot.db")
    await backend.initialize()
    try:
        await seed(backend)
        await load_demo(backend, days=3, runs_per_day=2, seed=4, end=END)  # bystanders of every type
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
            # retention reaches ClickHouse with the same cutoffs
            others = f"SELECT count() FROM {db}.events WHERE type <> 'log'"
            n_others = engine.value(others)
            env["MAGSAG_STORAGE_RETENTION"] = "type:log&tier:clickhouse=1d"
            res = magsag("data", "retention", "apply", "--json", env=env)
            assert res.code == 0, res.err
            assert res.json()["clickhouse"]["events"] > 0 and res.json()["lakes"][0]["events"] == 0
            cut = "toDateTime64('2026-03-09 12:00:00', 6, 'UTC')"
            assert engine.value(f"SELECT count() FROM {db}.events WHERE type = 'log' AND ts < {cut}") == 0
            assert n_others > 0 and engine.value(others) == n_others
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


def test_select_by_agent_and_time(tmp_path: Path) -> None:
    """--agent and --since/--until select whole runs by agent and start time, in hot store and lake."""
    env = store(tmp_path)
    # the old tree's runs started on day 2 (03-08), the hot tree's on day 0 (03-10)
    res = magsag("data", "delete", "--agent", "erase-sag", "--until", "2026-03-09", "--json", env=env)
    assert res.code == 0, res.err
    rep = res.json()
    assert sorted(rep["run_ids"]) == ["sag-erase0002", "sag-erase0003"]
    assert rep["lakes"][0]["runs"] == 2 and rep["hot"] == {"events": 0, "runs": 0}
    res = magsag("data", "delete", "--agent", "erase-mag", "--since", "2026-03-10", "--no-children", "--json", env=env)
    assert res.code == 0, res.err
    assert res.json()["run_ids"] == ["mag-erase0001h"] and res.json()["hot"] == {"events": 1, "runs": 1}
    rows = lake_events(open_lake(env["MAGSAG_STORAGE_LAKE_URL"]))
    assert {r[2] for r in rows} & {"sag-erase0002", "sag-erase0003"} == set()
    assert "mag-erase0001" in {r[2] for r in rows}  # its parent was not selected


def test_retention_apply_cli(tmp_path: Path) -> None:
    env = store(tmp_path)
    env["MAGSAG_STORAGE_RETENTION"] = "agent:keep-mag&tier:lake=1d"
    dry = magsag("data", "retention", "apply", "--dry-run", "--json", env=env)
    assert dry.code == 0, dry.err
    assert dry.json()["lakes"][0]["events"] == 3
    done = magsag("data", "retention", "apply", env=env)
    assert done.code == 0, done.err
    assert "rewritten_days" in done.out
    rows = lake_events(open_lake(env["MAGSAG_STORAGE_LAKE_URL"]))
    assert rows and not [r for r in rows if r[3] == "keep-mag"]
    bad = magsag("data", "retention", "apply", "--rules", "*=0d", env=env)
    assert bad.code == 2 and "must be positive" in bad.err
