"""docs/clickhouse.md cannot rot: its DDL is what sql.py generates, its examples run."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.objstore import Lake

from tests.clickhouse_helpers import ch_env, new_database

DOC = Path(__file__).resolve().parents[2] / "docs" / "clickhouse.md"


def _block(kind: str, name: str, lang: str) -> str:
    m = re.search(rf"<!-- {kind}: {name} -->\n```{lang}\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"docs/clickhouse.md has no {kind} {name}"
    return m.group(1)


@pytest.mark.parametrize("dataset", ["events", "runs"])
def test_documented_ddl_is_the_generated_ddl(dataset: str) -> None:
    assert _block("ddl", dataset, "sql").strip() == sql.create_table("magsag", dataset)


async def test_python_examples_run(local_lake: Lake, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    for key, value in {**ch_env("chdb", new_database()), "MAGSAG_STORAGE_LAKE_URL": local_lake.url}.items():
        monkeypatch.setenv(key, value)
    namespace: dict[str, Any] = {}
    exec(compile(_block("example", "clickhouse-load", "python"), "docs/clickhouse.md", "exec"), namespace)
    report = namespace["report"]
    assert report.loaded_partitions > 0 and report.mode == "server"
    assert f"{report.loaded_partitions} {report.loaded_rows} server" in capsys.readouterr().out

    body = textwrap.indent(_block("example", "clickhouse-read", "python"), "    ")
    exec(compile(f"async def _example():\n{body}\n    return locals()", "docs/clickhouse.md", "exec"), namespace)
    got = await namespace["_example"]()
    assert got["runs"] and all(r["agent_slug"] == "research-mag" for r in got["runs"])
    assert got["hits"] and got["p95"]["count"] > 0
