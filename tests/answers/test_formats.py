"""Issue 13, items 12 and 13: --format table|json|jsonl|csv|tsv (+ parquet) and --output on
query, search, stats, report and sql (--json its shortcut everywhere); titles that count."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cli_helpers import magsag

COMMANDS = {
    "query": ("data", "query", "--limit", "5"),
    "search": ("data", "search", "rate limit", "--limit", "5"),
    "stats": ("data", "stats"),
    "report": ("data", "report", "--days", "0"),
    "sql": ("data", "sql", "SELECT run_id, metrics FROM runs ORDER BY run_id LIMIT 5"),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("formats")
    env = {
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(root / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(root / "lake"),
    }
    assert magsag("data", "demo", "--days", "4", "--runs-per-day", "8", "--json", env=env).code == 0
    assert magsag("data", "tier", "--hot-days", "2", "--json", env=env).code == 0
    return env


def _rows(cmd: str, env: dict[str, str], fmt: str) -> list[dict]:  # type: ignore[type-arg]
    res = magsag(*COMMANDS[cmd], "--format", fmt, env=env)
    assert res.code == 0, (cmd, fmt, res.err)
    if fmt == "jsonl":
        return [json.loads(line) for line in res.out.splitlines()]
    return list(csv.DictReader(io.StringIO(res.out), delimiter="\t" if fmt == "tsv" else ","))


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_format(cmd: str, env: dict[str, str]) -> None:
    as_json = magsag(*COMMANDS[cmd], "--format", "json", env=env)
    assert as_json.code == 0, as_json.err
    assert magsag(*COMMANDS[cmd], "--json", env=env).out == as_json.out  # --json is the shortcut
    jsonl, csv_rows, tsv_rows = (_rows(cmd, env, f) for f in ("jsonl", "csv", "tsv"))
    assert jsonl and len(jsonl) == len(csv_rows) == len(tsv_rows)
    assert list(jsonl[0]) == list(csv_rows[0]) == list(tsv_rows[0])
    table = magsag(*COMMANDS[cmd], "--format", "TABLE", env=env)
    assert table.code == 0 and "┃" in table.out
    bad = magsag(*COMMANDS[cmd], "--format", "xml", env=env)
    assert bad.code == 2 and "--format" in bad.err


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_output_file(cmd: str, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    res = magsag(*COMMANDS[cmd], "--format", "jsonl", "--output", str(out), env=env)
    assert res.code == 0 and res.out == "" and str(out) in res.err
    assert out.read_text().splitlines() == [json.dumps(r, separators=(",", ":")) for r in _rows(cmd, env, "jsonl")]


@pytest.mark.parametrize("cmd", ["query", "search", "report", "sql"])
def test_parquet_where_it_fits(cmd: str, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    assert magsag(*COMMANDS[cmd], "--format", "parquet", "--output", str(out), env=env).code == 0
    assert pq.read_table(out).num_rows == len(_rows(cmd, env, "jsonl"))
    res = magsag(*COMMANDS[cmd], "--format", "parquet", env=env)
    assert res.code == 2 and "--output" in res.err


def test_json_columns_are_objects(env: dict[str, str]) -> None:
    sql = magsag(
        "data", "sql", "SELECT payload, metrics FROM events JOIN runs USING (run_id) LIMIT 3", "--json", env=env
    )
    assert sql.code == 0, sql.err
    rows = sql.json()
    assert rows and all(isinstance(r["payload"], dict) and isinstance(r["metrics"], dict) for r in rows)
    run_id = rows and magsag("data", "query", "--limit", "1", "--json", env=env).json()[0]["run_id"]
    events = _rows_of(magsag("data", "query", "--run-id", run_id, "--format", "jsonl", env=env).out)
    assert events and all(isinstance(e["payload"], dict) for e in events)


def _rows_of(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines()]


def test_titles_tell_how_many_match(env: dict[str, str]) -> None:
    total = len(magsag("data", "search", "rate limit", "--limit", "1000", "--json", env=env).json())
    assert total > 2
    res = magsag("data", "search", "rate limit", "--limit", "2", env=env)
    assert f"2 of {total:,} matches for 'rate limit'" in res.out
    runs = magsag("data", "sql", "SELECT count(*) AS n FROM runs", "--json", env=env).json()[0]["n"]
    listed = magsag("data", "query", "--limit", "3", env=env)
    assert f"3 of {runs:,} runs" in listed.out
    everything = magsag("data", "query", "--limit", str(runs + 5), env=env)
    assert f"{runs} runs" in everything.out and " of " not in everything.out.splitlines()[0]
