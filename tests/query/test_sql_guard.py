"""``data sql`` runs one read-only SELECT over the views and refuses everything else.

Two independent layers are tested: the parser-based check (every hostile statement is
refused with a one-line message before it runs), and the locked connection underneath
(the same statements, sent straight to DuckDB, still cannot read files, load extensions
or change settings).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.errors import QueryError
from magsag.lakehouse import query

from tests.cli_helpers import magsag


@pytest.fixture
def settings(store: dict[str, str]) -> Any:
    from magsag.lakehouse.settings import load_settings

    return load_settings(db_path=store["MAGSAG_STORAGE_DB_PATH"], lake_url=store["MAGSAG_STORAGE_LAKE_URL"])


@pytest.fixture
def con(settings: Any) -> Iterator[Any]:
    c = query.connect(settings, locked=True)
    yield c
    query.close(c)


def hostile(store: dict[str, str]) -> list[str]:
    lake, db, root = store["MAGSAG_STORAGE_LAKE_URL"], store["MAGSAG_STORAGE_DB_PATH"], store["root"]
    return [
        "INSERT INTO events (event_id) VALUES ('x')",
        "CREATE TABLE stolen AS SELECT * FROM events",
        "CREATE OR REPLACE VIEW events AS SELECT 1",
        "DROP VIEW events",
        "DELETE FROM hot_events",
        "UPDATE runs SET status = 'failed'",
        f"ATTACH '{root}/other.db' AS other",
        "DETACH magsag_hot",
        f"COPY (SELECT * FROM events) TO '{root}/out.csv'",
        f"COPY (SELECT * FROM events) TO '{lake}/events/dt=2026-01-01/evil.parquet' (FORMAT parquet)",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_csv_auto('/etc/passwd')",
        f"SELECT * FROM read_text('{root}/secret.txt')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM read_json('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        f"SELECT * FROM '{root}/secret.txt'",
        f"SELECT * FROM read_parquet('{lake}/events/*/*.parquet')",
        "SELECT * FROM glob('/etc/*')",
        f"SELECT * FROM sqlite_scan('{db}', 'events')",
        "SELECT * FROM sqlite_query('magsag_hot', 'SELECT * FROM tier_batches')",
        "SELECT * FROM magsag_hot.events",
        "SELECT * FROM magsag_hot.main.runs",
        "SELECT * FROM query('SELECT 1')",
        "SELECT * FROM parquet_metadata('/etc/passwd')",
        "SELECT * FROM sniff_csv('/etc/passwd')",
        "SELECT * FROM duckdb_secrets()",
        "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x",
        "SELECT (SELECT count(*) FROM read_text('/etc/passwd'))",
        "SELECT * FROM events, read_blob('/etc/hostname')",
        "SELECT * FROM events WHERE run_id IN (SELECT content FROM read_text('/etc/passwd'))",
        "INSTALL httpfs",
        "LOAD httpfs",
        "LOAD '/tmp/evil.duckdb_extension'",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "SET threads = 1",
        "SET VARIABLE x = 1",
        "PRAGMA threads = 1",
        "PRAGMA version",
        "CALL pragma_version()",
        "SELECT 1; SELECT 2",
        "SELECT 1; DROP VIEW events",
        "EXPORT DATABASE '/tmp/magsag-export'",
        "CHECKPOINT",
        "BEGIN TRANSACTION",
        "USE magsag_hot",
        "VACUUM",
    ]


def test_hostile_sql_is_refused_before_it_runs(store: dict[str, str], con: Any) -> None:
    for sql in hostile(store):
        with pytest.raises(QueryError) as info:
            query.run_sql(sql, con=con)
        message = str(info.value)
        assert "\n" not in message and message.startswith(("data sql:", "malformed SQL")), (sql, message)
    # nothing was written or changed
    root = Path(store["root"])
    assert not (root / "out.csv").exists() and not (root / "other.db").exists()
    assert not list(Path(store["MAGSAG_STORAGE_LAKE_URL"]).rglob("evil.parquet"))
    assert query.run_sql("SELECT count(*) AS n FROM events", con=con).to_pylist()[0]["n"] > 50
    assert query.run_sql("SELECT current_setting('enable_external_access') AS v", con=con).to_pylist() == [{"v": False}]


def test_locked_connection_refuses_even_without_the_check(store: dict[str, str], con: Any) -> None:
    """Defence in depth: statements sent straight to DuckDB still cannot escape."""
    import duckdb

    root = store["root"]
    for sql in [
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM read_text('{root}/secret.txt')",
        "SELECT * FROM glob('/etc/*')",
        f"COPY (SELECT 1) TO '{root}/out.csv'",
        f"ATTACH '{root}/other.db' AS other",
        "LOAD '/tmp/evil.duckdb_extension'",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "SET allowed_directories = ['/']",
    ]:
        with pytest.raises((duckdb.Error, QueryError)):  # the guard itself, then DuckDB's settings
            con.execute(sql).fetchall()
    assert not (Path(root) / "out.csv").exists()


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("SELEC 1", "malformed SQL: Parser Error"),
        ("SELECT * FROM", "malformed SQL"),
        ("SELECT 'unterminated", "malformed SQL"),
        ("", "no SQL given"),
        ("   ;  ", "no SQL statement"),
        ("SELECT * FROM no_such_view", "Catalog Error"),
        ("SELECT nope FROM events", "Binder Error"),
    ],
)
def test_malformed_sql_is_a_clear_error(con: Any, sql: str, needle: str) -> None:
    with pytest.raises(QueryError, match=needle) as info:
        query.run_sql(sql, con=con)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM events",
        "FROM runs LIMIT 2",
        "DESCRIBE events",
        "SHOW TABLES",
        "SUMMARIZE run_summary",
        "WITH a AS (SELECT agent_slug FROM runs) SELECT count(*) FROM a",
        "SELECT * FROM range(3)",
        "SELECT view_name FROM duckdb_views() WHERE NOT internal",
        "SELECT tier, count(*) FROM events GROUP BY ALL",
        "SELECT e.msg FROM events e JOIN runs r USING (run_id) WHERE r.status = 'failed' LIMIT 3",
    ],
)
def test_read_only_queries_run(con: Any, sql: str) -> None:
    assert query.run_sql(sql, con=con).num_rows >= 1


def test_cli_refuses_in_one_line(store: dict[str, str]) -> None:
    env = {k: v for k, v in store.items() if k.startswith("MAGSAG_")}
    for sql in ("DROP VIEW events", "SELECT * FROM read_csv('/etc/passwd')", "SELECT 1; SELECT 2", "SELEC 1"):
        res = magsag("data", "sql", sql, env=env)
        assert res.code == 2, (sql, res.out, res.err)
        lines = [line for line in res.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), res.err
        assert "Traceback" not in res.err and res.out == ""
