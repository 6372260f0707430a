"""Item 10: a deleted, truncated or garbled committed file is named with its repair, never
skipped; ``compact --repair`` sets it aside and the lake answers again (issue 14)."""

from __future__ import annotations

import pytest
from magsag.lakehouse import manifest
from magsag.lakehouse.objstore import open_lake

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line

READERS = [
    ("sql", "SELECT 1"),
    ("sql", "SELECT count(*) FROM events"),
    ("stats",),
    ("report", "--days", "0"),
]


def _damage(world: World, how: str) -> manifest.ManifestEntry:
    lake = open_lake(str(world.lake))
    entry = manifest.live_entries(lake, "events")[-1]
    path = world.lake / entry.path
    data = path.read_bytes()
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbled footer":
        path.write_bytes(data[:-64] + b"\x00" * 60 + data[-4:])
    else:  # garbled pages: the footer is intact, the data is not
        mid = len(data) // 2
        path.write_bytes(data[:100] + b"\xff" * (mid - 100) + data[mid:])
    return entry


@pytest.mark.parametrize("how", ["deleted", "truncated", "garbled footer", "garbled pages"])
def test_a_damaged_file_is_named_then_repaired(world: World, how: str) -> None:
    events_before = magsag("data", "sql", "SELECT count(*) AS n FROM events", "--format", "json", env=world.env)
    total = events_before.json()[0]["n"]
    entry = _damage(world, how)
    before = world.files()
    for args in READERS:
        if how == "garbled pages" and args in (("sql", "SELECT 1"), ("stats",)):
            continue  # they read footers only: nothing to notice
        res = magsag("data", *args, env=world.env)
        if args == ("sql", "SELECT 1") and res.code == 0:
            continue  # the views were made from other files' schemas and no row is read
        assert res.code == 2, (args, res.out, res.err)
        line = one_line(res.err)
        assert entry.path in line and "compact --repair" in line, (args, line)
    assert world.files() == before

    res = magsag("data", "compact", "--repair", "--json", env=world.env)
    assert res.code == 0, res.err
    aside = [r for r in res.json() if r.get("status") == "set aside"]
    assert [(r["path"], r["rows"]) for r in aside] == [(entry.path, entry.rows)]
    assert not (world.lake / entry.path).exists()
    if how != "deleted":
        assert any(p.endswith(entry.path) and "_magsag/quarantine/" in p for p in world.files())

    for args in READERS:
        res = magsag("data", *args, env=world.env)
        assert res.code == 0, (args, res.err)
    after = magsag("data", "sql", "SELECT count(*) AS n FROM events", "--format", "json", env=world.env)
    assert after.json()[0]["n"] == total - entry.rows
