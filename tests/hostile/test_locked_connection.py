"""Item 19: ``lakehouse.connect(locked=True)`` holds by itself: every statement sent through
it passes the guard, also what DuckDB's own settings let through (issue 14)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from magsag.backends.errors import QueryError
from magsag.lakehouse import query
from magsag.lakehouse.settings import load_settings

from tests.hostile.conftest import World


def test_the_locked_connection_checks_every_statement(world: World, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    before = world.files()
    con = query.connect(load_settings(db_path=world.db, lake_url=str(world.lake)), locked=True)
    try:
        for sql in (
            f"ATTACH '{tmp_path / 'x.db'}' AS x (TYPE sqlite)",
            "CREATE TABLE stolen AS SELECT 1",
            f"SELECT * FROM sqlite_scan('{other}', 't')",
            f"COPY (SELECT 1) TO '{world.lake}/evil.csv'",
            "SET lock_configuration = false",
        ):
            with pytest.raises(QueryError):
                con.execute(sql)
        for name in ("read_parquet", "register", "install_extension", "load_extension", "from_query", "table"):
            with pytest.raises(AttributeError):
                getattr(con, name)
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] > 0
        assert con.cursor().execute("SELECT 1 AS one").fetchall() == [(1,)]
        assert con.execute("EXPLAIN SELECT count(*) FROM events").fetchall()
    finally:
        query.close(con)
    assert not (tmp_path / "x.db").exists() and not (world.lake / "evil.csv").exists()
    assert world.files() == before
