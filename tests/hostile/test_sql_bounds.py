"""Item 7: ``data sql`` is bounded: it stops at --max-rows, a statement timeout interrupts
it, and the connection has a memory limit and a thread count (issue 14)."""

from __future__ import annotations

import pytest
from magsag.lakehouse import query
from magsag.lakehouse.settings import load_settings

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line


@pytest.mark.timeout(300)  # a hang guard: the unbounded query grew to 14 GB and never ended
def test_max_rows_stops_an_endless_result(world: World) -> None:
    res = magsag("data", "sql", "SELECT * FROM range(100000000000)", "--max-rows", "3", env=world.env)
    assert res.code == 0, res.err
    assert "more than" in res.out and "showing the first 3" in res.err
    assert [ln for ln in res.out.splitlines() if ln.startswith("│")] == ["│ 0     │", "│ 1     │", "│ 2     │"]


@pytest.mark.timeout(300)
def test_a_statement_timeout_interrupts_a_query_that_never_ends(world: World) -> None:
    env = {**world.env, "MAGSAG_STORAGE_SQL_TIMEOUT_S": "2"}
    sql = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t"
    res = magsag("data", "sql", sql, env=env)
    assert res.code == 2
    assert "longer than 2 s" in one_line(res.err)


def test_the_locked_connection_has_bounds(world: World) -> None:
    settings = load_settings(db_path=world.db, lake_url=str(world.lake), sql_memory_limit="300MB", sql_threads=1)
    con = query.connect(settings, locked=True)
    try:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
        assert threads == 1 and limit.replace(" ", "") in ("286.1MiB", "300.0MB", "286.0MiB"), limit
        with pytest.raises(Exception, match=r"configuration|only read-only SELECT"):
            con.execute("SET memory_limit = '100GB'")
    finally:
        query.close(con)


def test_bad_bounds_are_refused(world: World) -> None:
    res = magsag("data", "sql", "SELECT 1", env={**world.env, "MAGSAG_STORAGE_SQL_MEMORY_LIMIT": "lots"})
    assert res.code == 2 and "MAGSAG_STORAGE_SQL_MEMORY_LIMIT" in one_line(res.err)


@pytest.mark.timeout(300)
def test_ctrl_c_interrupts_the_query(world: World) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    sql = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t"
    env = {**os.environ, **world.env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "magsag", "data", "sql", sql], env=env, stderr=subprocess.PIPE, text=True
    )
    time.sleep(3)  # let it start (no assertion on time: only that it ends once interrupted)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert one_line(err) == "error: interrupted"
