"""Item 4: a committed file missing a canonical column (or retyped) is refused, named,
and nothing changes (issue 14)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from magsag.lakehouse import manifest
from magsag.lakehouse.objstore import open_lake

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line
from tests.lake import data


def _damage(world: World, how: str) -> tuple[str, str]:
    """Rewrite one committed events file (``how``: drop or retype ``msg``) and commit a
    second, intact file to the same day so that compaction has something to merge."""
    lake = open_lake(str(world.lake))
    entry = manifest.live_entries(lake, "events")[0]
    path = world.lake / entry.path
    table = pq.read_table(path)
    # named to sort after the damaged file: DuckDB takes the first file's schema
    data.write_file(lake, "events", entry.day, data.to_rows("events", table)[:5], "zlate", 0)
    if how == "drop":
        table = table.drop_columns(["msg"])
    else:
        table = table.set_column(table.schema.get_field_index("msg"), "msg", pa.array(range(table.num_rows)))
    pq.write_table(table, path)
    return entry.dt, entry.path


@pytest.mark.parametrize("how", ["drop", "retype"])
def test_compaction_refuses_a_file_without_a_canonical_column(world: World, how: str) -> None:
    dt, bad = _damage(world, how)
    before_files, before_hot = world.files(), world.hot_events()

    res = magsag("data", "compact", "--partition", dt, env=world.env)

    assert res.code == 2, res.out + res.err
    line = one_line(res.err)
    assert bad in line and "msg" in line and "nothing changed" in line
    assert world.files() == before_files
    assert world.hot_events() == before_hot


def test_readers_name_the_file(world: World) -> None:
    _, bad = _damage(world, "drop")
    lake = open_lake(str(world.lake))
    run_id = pq.read_table(world.lake / bad, columns=["run_id"]).column(0)[0].as_py()
    before = world.files()
    for args in (("query", "--run-id", run_id, "--json"), ("sql", "SELECT count(msg) FROM lake_events")):
        res = magsag("data", *args, env=world.env)
        assert res.code == 2, (args, res.out, res.err)
        line = one_line(res.err)
        assert bad in line and "msg" in line, args
    assert world.files() == before
    assert manifest.live_entries(lake, "events")
