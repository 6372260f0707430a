"""Item 9: knobs that would run away are bounded, with a clear message (issue 14)."""

from __future__ import annotations

import pytest

from magsag.cli.validate import WORKERS_PER_CORE, cores
from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("tier", "--every", "0.0000001s"), "--every"),
        (("tier", "--every", "0.5"), "--every"),
        (("tier", "--every", "400d"), "--every"),
        (("migrate", "--workers", str(WORKERS_PER_CORE * cores() + 1)), "--workers"),
        (("migrate", "--workers", "40000"), "--workers"),
    ],
)
def test_runaway_knobs_are_refused(world: World, args: tuple[str, ...], needle: str) -> None:
    before_files, before_hot = world.files(), world.hot_events()
    res = magsag("data", *args, env=world.env)
    assert res.code == 2, res.out + res.err
    line = one_line(res.err)
    assert needle in line and ("out of range" in line or "not an interval" in line)
    assert world.files() == before_files and world.hot_events() == before_hot


def test_sane_workers_are_accepted(world: World, tmp_path) -> None:
    (tmp_path / "runs").mkdir()
    res = magsag("data", "migrate", str(tmp_path / "runs"), "--workers", str(cores()), "--json", env=world.env)
    assert res.code == 0, res.err
