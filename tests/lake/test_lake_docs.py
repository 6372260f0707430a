"""The reading examples of docs/lake.md run against a freshly written lake."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _missing
from tests.lake import data
from tests.lake_builder import write_lake

DOC = Path(__file__).resolve().parents[2] / "docs" / "lake.md"


def _example(name: str) -> str:
    m = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"docs/lake.md has no example {name}"
    return m.group(1)


def _run(name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(_example(name), f"docs/lake.md:{name}", "exec"), namespace)
    return namespace


@pytest.fixture
def written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    monkeypatch.chdir(tmp_path)
    events, runs = data.demo(days=3, runs_per_day=8, seed=2)
    write_lake(str(tmp_path / "lake"), events, runs, files_per_day=2)
    return events, runs


def test_duckdb_example(written) -> None:
    events, _ = written
    daily = _run("lake-duckdb")["daily"]
    expected = Counter(
        (d, r[3]) for d, rows in data.by_day(events, 1).items() if d.isoformat() >= "2026-03-08" for r in rows
    )
    assert {(d, a): n for d, a, n, _ in daily} == dict(expected)


def test_polars_example(written) -> None:
    _, runs = written
    got = {(r["agent_slug"], r["status"]): r["len"] for r in _run("lake-polars")["runs"].to_dicts()}
    assert got == dict(Counter((r[1], r[3]) for r in runs))


def test_pyarrow_example(written) -> None:
    events, _ = written
    table = _run("lake-pyarrow")["table"]
    assert table.num_rows == sum(1 for r in events if r[4] == "log")


def test_clickhouse_example(written) -> None:
    try:
        import chdb  # noqa: F401
    except ImportError:
        _missing("chDB not installed (pip install 'magsag-storage[clickhouse]')")
    events, _ = written
    # chDB allows one data path per process and other tests hold one: run the example alone.
    code = _example("lake-clickhouse") + "\nprint(str(result).strip())\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert sum(int(line.rsplit(",", 1)[1]) for line in lines) == len(events)


def test_manifest_snapshot_example(written) -> None:
    events, _ = written
    files = _run("lake-manifest")["files"]
    assert len(files) == 2 * len(data.by_day(events, 1))
