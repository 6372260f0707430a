"""Item 12: an uncommitted Parquet file is read by no command, and compact removes it once
it is older than the grace period (issue 14)."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta

from magsag.lakehouse import manifest
from magsag.lakehouse.objstore import open_lake

from tests.cli_helpers import magsag
from tests.hostile.conftest import NOW, World


def _stray_copy(world: World, age: timedelta) -> tuple[str, int]:
    """A copy of a committed events file under another name, last written ``age`` before now."""
    lake = open_lake(str(world.lake))
    entry = manifest.live_entries(lake, "events")[0]
    stray = entry.path.rsplit("/", 1)[0] + "/part-crashed-0000.parquet"
    shutil.copy(world.lake / entry.path, world.lake / stray)
    t = (datetime.fromisoformat(NOW.replace("Z", "+00:00")) - age).timestamp()
    os.utime(world.lake / stray, (t, t))
    return stray, entry.rows


def _counts(world: World) -> dict[str, int]:
    report = magsag("data", "report", "--days", "0", "--json", env=world.env)
    assert report.code == 0, report.err
    sql = magsag("data", "sql", "SELECT count(*) AS n FROM lake_events", "--format", "json", env=world.env)
    assert sql.code == 0, sql.err
    return {"report": report.json()["rows"], "sql": sql.json()[0]["n"]}


def test_readers_never_count_an_uncommitted_file(world: World) -> None:
    before = _counts(world)
    stray, rows = _stray_copy(world, timedelta(days=3))
    assert (world.lake / stray).exists()
    assert rows > 0
    assert _counts(world) == before


def test_compact_removes_old_orphans_only(world: World) -> None:
    old, _ = _stray_copy(world, timedelta(days=3))
    lake_before = {k: v for k, v in world.files().items() if k != f"lake/{old}"}
    young = old.replace("crashed", "running")
    shutil.copy(world.lake / old, world.lake / young)
    t = (datetime.fromisoformat(NOW.replace("Z", "+00:00")) - timedelta(hours=1)).timestamp()
    os.utime(world.lake / young, (t, t))

    res = magsag("data", "compact", "--json", env=world.env)

    assert res.code == 0, res.err
    assert not (world.lake / old).exists()
    assert (world.lake / young).exists()  # may be a running job's file between move and commit
    after = world.files()
    del after[f"lake/{young}"]
    assert after == lake_before
