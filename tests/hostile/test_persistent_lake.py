"""Item 2: rows leave the hot store only for a lake that persists (issue 14)."""

from __future__ import annotations

import pytest

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line


@pytest.mark.parametrize(
    "args",
    [
        ("tier", "--hot-days", "0", "--lake", "memory://lake"),
        ("tier", "--hot-days", "0", "--dry-run", "--lake", "memory://lake"),
        ("archive", "memory://x", "--since", "0", "--delete"),
        ("archive", "simplecache::memory://x", "--since", "0", "--delete"),
    ],
)
def test_a_lake_that_does_not_persist_receives_no_moved_rows(world: World, args: tuple[str, ...]) -> None:
    before_files, before_hot = world.files(), world.hot_events()

    res = magsag("data", *args, env=world.env)

    assert res.code == 2, res.out + res.err
    line = one_line(res.err)
    assert "does not persist" in line and "file://" in line and "s3://" in line
    assert world.hot_events() == before_hot
    assert world.files() == before_files


def test_copying_to_memory_deletes_nothing_and_is_allowed(world: World) -> None:
    before_hot = world.hot_events()
    res = magsag("data", "archive", "memory://copy-only", "--since", "0", "--json", env=world.env)
    assert res.code == 0, res.err
    assert 0 < res.json()["events"] <= sum(before_hot.values())
    assert world.hot_events() == before_hot
