"""The SQLite export worker (DuckDB in a child process): results, errors, a dying child."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from magsag.backends.errors import StorageError
from magsag.backends.sqlite.export_worker import ExportWorker
from magsag.backends.sqlite.tiering import sqlite_scanner_path


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "x.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
    conn.executemany("INSERT INTO t (s) VALUES (?)", [(f"row {i}",) for i in range(5000)])
    conn.commit()
    conn.close()
    return str(path)


def test_rows_errors_and_reuse(db: str) -> None:
    ext = sqlite_scanner_path()
    if ext is None:
        pytest.skip("duckdb-extension-sqlite-scanner not installed")
    w = ExportWorker(db, ext)
    try:
        inner = "'SELECT id, s FROM t WHERE id > 10'"
        sql = f"SELECT CAST(id AS BIGINT) AS id, s FROM sqlite_query('hot', {inner}) ORDER BY id"
        batches = list(w.batches(sql, 1000))
        assert sum(b.num_rows for b in batches) == 4990 and batches[0].column("id")[0].as_py() == 11
        with pytest.raises(StorageError, match="nonexisting"):
            list(w.batches("SELECT * FROM nonexisting", 10))
        assert sum(b.num_rows for b in w.batches("SELECT 1 AS x", 10)) == 1  # the same child still serves
        # abandoned half-way: the child is stopped, the next query starts a new one
        it = w.batches("SELECT * FROM range(1000000)", 1000)
        next(it)
        it.close()
        assert w._proc is None
        assert sum(b.num_rows for b in w.batches("SELECT 2 AS x", 10)) == 1
        # a child that dies mid-stream is a one-line StorageError
        it = w.batches("SELECT * FROM range(5000000)", 1000)
        next(it)
        assert w._proc is not None
        w._proc.kill()
        with pytest.raises(StorageError, match="export worker"):
            list(it)
    finally:
        w.close()


def test_missing_extension_is_a_storage_error(db: str) -> None:
    w = ExportWorker(db, "/nowhere/sqlite_scanner.duckdb_extension")
    try:
        with pytest.raises(StorageError, match="sqlite_scanner"):
            list(w.batches("SELECT 1", 10))
    finally:
        w.close()
