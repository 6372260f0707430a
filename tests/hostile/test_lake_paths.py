"""Item 1: a manifest whose paths leave the lake deletes nothing (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

from magsag.lakehouse import layout, manifest
from magsag.lakehouse.objstore import open_lake

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line


def _plant(world: World, victim: str) -> tuple[str, Path, Path]:
    """The sweep's attack: an entry naming ``victim`` through ``..``, and a second entry
    that ``replaces`` it (so compaction's recovery would delete it)."""
    lake = open_lake(str(world.lake))
    entry = manifest.live_entries(lake, "events")[0]
    bad = json.loads(entry.to_json())
    bad["path"] = f"events/dt={entry.dt}/../../../{victim}"
    bad_file = world.lake / "_magsag/manifest/events" / f"dt={entry.dt}" / "evil.json"
    bad_file.write_text(json.dumps(bad))
    rep = json.loads(entry.to_json())
    rep["path"] = f"events/dt={entry.dt}/part-evil-0000.parquet"
    rep["replaces"] = [bad["path"]]
    rep_file = world.lake / layout.manifest_path(rep["path"])
    rep_file.write_text(json.dumps(rep))
    return entry.dt, bad_file, rep_file


def test_manifest_path_escaping_the_lake_is_refused_before_any_delete(world: World) -> None:
    (world.root / "victim.txt").write_text("keep me")
    dt, bad_file, rep_file = _plant(world, ".magsag/storage.db")
    before_files, before_hot = world.files(), world.hot_events()
    assert before_hot

    res = magsag("data", "compact", env=world.env)

    assert res.code == 2, res.out + res.err
    line = one_line(res.err)
    assert str(bad_file) in line and "not a lake data file" in line
    assert world.db.exists() and world.hot_events() == before_hot
    assert world.files() == before_files
    # the same trick on another file: still refused, for one partition too
    (world.root / "victim.txt").write_text("keep me")
    bad_file.unlink()
    rep_file.unlink()
    _plant(world, "victim.txt")
    res = magsag("data", "compact", "--partition", dt, env=world.env)
    assert res.code == 2 and "evil.json" in one_line(res.err)
    assert (world.root / "victim.txt").read_text() == "keep me"


def test_every_reader_names_the_entry(world: World) -> None:
    _, bad_file, _ = _plant(world, "victim.txt")
    before = world.files()
    for args in (("stats",), ("sql", "SELECT count(*) FROM lake_events")):
        res = magsag("data", *args, env=world.env)
        assert res.code == 2, (args, res.out, res.err)
        assert str(bad_file) in one_line(res.err), args
    assert world.files() == before


def test_entry_paths_must_keep_the_layout() -> None:
    ok = "events/dt=2026-03-01/part-tier-1-0000.parquet"
    assert layout.check_data_path(ok)[0] == "events"
    for bad in (
        "/etc/passwd",
        "events/dt=2026-03-01/../x.parquet",
        "events/dt=2026-03-01/./x.parquet",
        "events//dt=2026-03-01/x.parquet",
        "events/dt=2026-03-01/sub/x.parquet",
        "events/dt=2026-03-01/x.db",
        "events\\dt=2026-03-01\\x.parquet",
        "logs/dt=2026-03-01/x.parquet",
        "events/dt=2026-13-01/x.parquet",
        "events/dt=２０２６-03-01/x.parquet",
        "events/dt=2026-03-01/.parquet",
        ["events/dt=2026-03-01/x.parquet"],
    ):
        try:
            layout.check_data_path(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
