"""The two transports: parameters, Arrow inserts, chDB's one-folder rule, settings."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from magsag.backends.arrow import events_table
from magsag.backends.errors import ConfigError
from magsag.backends.schema import event_arrow_schema
from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.clickhouse.engines import ChdbEngine, Engine, error_code, first_line, open_engine
from magsag.lakehouse.clickhouse.schema import init_schema
from magsag.lakehouse.settings import load_settings

from tests.clickhouse_helpers import chdb_dir

TRICKY = ["plain", "tab\there", "new\nline", "back\\slash", 'quote\'s "double"', "{w0:String}", "日本語 エラー", ""]


@pytest.mark.parametrize("text", TRICKY)
def test_parameters_carry_any_text(engine: Engine, text: str) -> None:
    assert engine.value("SELECT {s:String}", {"s": text}) == text


def test_insert_arrow_and_read_back(engine: Engine) -> None:
    init_schema(engine)
    rows = [
        (f"e{i}", 1_761_206_400_000_000 + i, "r", "a", "log", "info", f"m{i}", "{}") + (None,) * 5 for i in range(5)
    ]

    table = events_table(rows)
    n = engine.insert_arrow("events", table.to_batches(2), event_arrow_schema())
    assert n == 5
    got = engine.rows(
        f"SELECT {sql.select_list('events')} FROM {sql.table(engine.database, 'events')} ORDER BY event_id"
    )
    assert [tuple(r) for r in got] == rows
    assert isinstance(engine.arrow("SELECT 1 AS x"), pa.Table)


def test_chdb_serves_one_folder_per_process(tmp_path: Path) -> None:
    chdb_dir()  # the test process's folder is open
    with pytest.raises(ConfigError, match="one data folder per process"):
        ChdbEngine(tmp_path / "other", "magsag")


def test_open_engine_picks_chdb_without_url_and_a_server_with_one() -> None:
    s = load_settings(clickhouse_path=chdb_dir(), clickhouse_database="default")
    with open_engine(s) as e:
        assert e.kind == "chdb" and e.reads_local_files and chdb_dir() in e.describe()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGSAG_CLICKHOUSE_URL", "https://analyst:url-pw@ch.example:8443/")
    monkeypatch.setenv("MAGSAG_CLICKHOUSE_PASSWORD", "hunter2")
    monkeypatch.setenv("MAGSAG_STORAGE_CLICKHOUSE_DATABASE", "analytics")  # the long prefix works too
    monkeypatch.setenv("MAGSAG_CLICKHOUSE_TTL_DAYS", "400")
    monkeypatch.setenv("MAGSAG_CLICKHOUSE_VERIFY", "false")
    s = load_settings()
    assert s.clickhouse_url == "https://analyst:url-pw@ch.example:8443"
    assert (s.clickhouse_database, s.clickhouse_ttl_days, s.clickhouse_verify) == ("analytics", 400, False)
    shown = str(s.describe()) + repr(s)
    assert "hunter2" not in shown and "url-pw" not in shown
    monkeypatch.setenv("MAGSAG_CLICKHOUSE_TTL_DAYS", "0")
    with pytest.raises(ConfigError, match="MAGSAG_CLICKHOUSE_TTL_DAYS"):
        load_settings()


def test_defaults() -> None:
    s = load_settings()
    assert s.clickhouse_url is None and s.clickhouse_database == "magsag"
    assert s.clickhouse_path == Path(".magsag/clickhouse") and s.clickhouse_ttl_days is None


def test_server_messages_become_one_line() -> None:
    text = "Code: 60. DB::Exception: Unknown table expression identifier 'x'. (UNKNOWN_TABLE) (version 26.9.2.1)\nstack"
    assert error_code(Exception(text)) == 60
    assert first_line(text) == "Unknown table expression identifier 'x'. (UNKNOWN_TABLE)"
    assert first_line("s3('http://h/b', 'key', 'sekrit')", ["sekrit"]) == "s3('http://h/b', 'key', '***')"
