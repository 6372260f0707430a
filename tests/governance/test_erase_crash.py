"""Kill ``magsag data delete`` at every step, run it again, and get the same end state.

The CLI runs in a child process with ``MAGSAG_LAKE_FAULT=erase:k``: it exits hard
(``os._exit``, like kill -9: no cleanup, no finally) at its k-th step boundary (its own,
and those of the publish and the partition recovery it calls), for k = 1, 2, ... until a
run finishes without reaching k. Each k starts from a new store and lake made the same way.
After the crash, running the same command again must leave exactly the state of an
uninterrupted erase: the same rows in the hot store and in the lake (read by plain glob,
so a leftover file would show), no file outside the manifest, no staging leftovers, the
job done.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.sqlite.store import SQLiteStorageBackend
from magsag.backends.tiering.protocol import MOVE
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.faults import FAULT_EXIT_CODE
from magsag.lakehouse.lakewriter import staged_jobs
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.tiering.job import run_tier

from tests.governance.test_erase import PARENT, seed
from tests.tier.helpers import END, HOT_DAYS, ROOT, lake_events, lake_runs

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
MAX_STEPS = 80


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAGSAG_STORAGE_", "MAGSAG_LAKE_FAULT"))}
    pp = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "magsag", "data", "delete", *args],
        env={**base, **env, "PYTHONPATH": pp, "MAGSAG_NOW": END.isoformat()},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def state(work: Path) -> dict[str, Any]:
    db = sqlite3.connect(work / "hot.db")
    try:
        events = Counter(db.execute("SELECT ts, run_id, msg, payload FROM events").fetchall())
        runs = Counter(db.execute("SELECT run_id, status FROM runs").fetchall())
        tombs = sorted(db.execute("SELECT kind, id FROM magsag_tombstones").fetchall())
        jobs = {r[0] for r in db.execute("SELECT state FROM magsag_erase_jobs")}  # a rerun adds a no-op job
    finally:
        db.close()
    lake = open_lake(str(work / "lake"))
    live = {e.path for ds in layout.DATASETS for e in manifest.live_entries(lake, ds)}
    files = {p[len(lake.root) :].lstrip("/") for p in lake.fs.find(lake.root) if p.endswith(".parquet")}
    return {
        "hot_events": events,
        "hot_runs": runs,
        "tombstones": tombs,
        "jobs": jobs,
        "lake_events": Counter(r[1:] for r in lake_events(lake)),  # event ids are random per store
        "lake_runs": Counter(lake_runs(lake)),
        "stray_files": sorted(files - live),
        "staged": staged_jobs(lake),
    }


async def make_store(work: Path) -> dict[str, str]:
    """A fresh SQLite store + local lake (built in place: the claim ledger names the lake's path)."""
    work.mkdir()
    backend = SQLiteStorageBackend(db_path=work / "hot.db")
    await backend.initialize()
    try:
        await seed(backend)
        await run_tier(backend, open_lake(str(work / "lake")), hot_days=HOT_DAYS, now=END, mode=MOVE)
    finally:
        await backend.close()
    return {
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(work / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(work / "lake"),
        "MAGSAG_CLICKHOUSE_PATH": str(work / "no-clickhouse"),
    }


PARTS = 6
PER_PART = 8  # kill points per part: each part stays well under the per-test timeout


@pytest.mark.parametrize("part", range(PARTS))
async def test_kill_at_every_step_then_rerun(tmp_path: Path, part: int) -> None:
    """Kill points ``k`` of the sweep are cut in PARTS tests (spread over the workers): part
    p kills at k = 8p+1 .. 8p+8; the last part runs on until the erase finishes uncrashed.
    Every k up to the end is killed in some part, and every rerun ends in the same state."""
    args = (PARENT, PARENT + "h")

    async def fresh(name: str) -> tuple[Path, dict[str, str]]:
        return tmp_path / name, await make_store(tmp_path / name)

    ref_dir, ref_env = await fresh("reference")
    done = cli(ref_env, *args)
    assert done.returncode == 0, done.stderr
    expected = state(ref_dir)
    assert expected["jobs"] == {"done"} and not expected["stray_files"] and not expected["staged"]

    last = part == PARTS - 1
    first_k = 1 + part * PER_PART
    crashed_at = []
    for k in range(first_k, MAX_STEPS if last else first_k + PER_PART):
        work, env = await fresh(f"k{k}")
        first = cli({**env, "MAGSAG_LAKE_FAULT": f"erase:{k}"}, *args)
        if first.returncode == 0:  # the sweep's end: this k is past the erase's last step
            assert state(work) == expected, k
            break
        assert first.returncode == FAULT_EXIT_CODE, first.stderr
        crashed_at.append(first.stderr.strip().splitlines()[-1])
        second = cli(env, *args)
        assert second.returncode == 0, (k, second.stderr)
        assert state(work) == expected, (k, crashed_at[-1])
        shutil.rmtree(work)
    else:
        if last:
            pytest.fail(f"still crashing after {MAX_STEPS} steps")
    if part == 0:  # the first steps: the record and the hot purge and scrub
        joined = "\n".join(crashed_at)
        for step in ("erase.recorded", "erase.hot_purged"):
            assert step in joined
