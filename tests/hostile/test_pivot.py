"""Item 19 (PIVOT part): ``data sql`` accepts PIVOT with an IN list, and says why a PIVOT
without one cannot run (DuckDB makes it two statements: CREATE TYPE, then SELECT)."""

from __future__ import annotations

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line


def test_pivot(world: World) -> None:
    res = magsag(
        "data",
        "sql",
        "PIVOT (SELECT tier FROM events) ON tier IN ('hot', 'lake') USING count(*)",
        "--format",
        "json",
        env=world.env,
    )
    assert res.code == 0, res.err
    (row,) = res.json()
    assert row["hot"] > 0 and row["lake"] > 0
    res = magsag("data", "sql", "PIVOT events ON tier", env=world.env)
    assert res.code == 2
    line = one_line(res.err)
    assert "PIVOT without an IN list" in line and "got 2" not in line
