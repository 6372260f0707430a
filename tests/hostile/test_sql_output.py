"""Item 3: ``data sql --output`` never writes over the store, its companions or the lake (issue 14)."""

from __future__ import annotations

import os

import pytest

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line


@pytest.mark.parametrize(
    "target",
    [
        ".magsag/storage.db",
        ".magsag/storage.db-wal",
        ".magsag/storage.db-shm",
        ".magsag/storage.db-journal",
        ".magsag/storage.db.magsag-journal/1.jsonl",
        ".magsag/../.magsag/storage.db",
        "store-link.db",  # a symbolic link to the store
        "lake/events/x.csv",
        "lake/_magsag/manifest/events/x.json",
        "lake-link/x.csv",  # a symbolic link to the lake
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_output_may_not_be_the_store_or_in_the_lake(world: World, target: str, fmt: str) -> None:
    os.symlink(world.db, world.root / "store-link.db")
    os.symlink(world.lake, world.root / "lake-link")
    before_files, before_hot = world.files(), world.hot_events()

    res = magsag("data", "sql", "SELECT 1 AS x", "--format", fmt, "--output", str(world.root / target), env=world.env)

    assert res.code == 2, res.out + res.err
    assert "--output" in one_line(res.err)
    assert world.hot_events() == before_hot
    assert world.files() == before_files
    assert not (world.root / ".magsag" / "storage.db-journal").exists()


def test_output_elsewhere_is_written(world: World) -> None:
    out = world.root / "result.csv"
    res = magsag("data", "sql", "SELECT 1 AS x", "--format", "csv", "--output", str(out), env=world.env)
    assert res.code == 0, res.err
    assert out.read_text() == "x\n1\n"
