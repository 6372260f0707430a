"""Docs that cannot rot: the CLI reference, README's two commands, .ci/run, the API example."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from magsag.cli.reference import render

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_generated_from_the_code() -> None:
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == render(), "docs/cli.md is stale: run `python3 -m magsag.cli.reference > docs/cli.md`"


def test_every_command_has_help() -> None:
    text = render()
    for heading in re.findall(r"^## `magsag data ([a-z ]+)`\n\n(.*)$", text, re.M):
        assert heading[1].strip(), f"command {heading[0]} has no help text"


def _bash_blocks(md: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", md, re.S)]


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    blocks = _bash_blocks(setup)
    assert len(blocks) == 2 and all("\n" not in b for b in blocks)
    main_cmd, test_cmd = blocks
    assert main_cmd.startswith("pip install -e . &&") and "magsag data demo" in main_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    m = re.search(r'^TEST_COMMAND="(.*)"$', ci, re.M)
    assert m and m.group(1) == test_cmd


async def test_api_example_in_docs_runs(sqlite_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from datetime import UTC, datetime

    from backends.sqlite import SQLiteStorageBackend

    async with SQLiteStorageBackend(sqlite_path) as s:
        await s.append_event("mag-a1b2c3d4", "offer-mag", "log", datetime.now(UTC), message="error: tool timed out")
    monkeypatch.setenv("MAGSAG_STORAGE_DB_PATH", str(sqlite_path))
    doc = (ROOT / "docs" / "api.md").read_text()
    code = re.search(r"<!-- example: api -->\n```python\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    body = textwrap.indent(code, "    ")
    namespace: dict[str, Any] = {}
    exec(compile(f"async def _example():\n{body}\n    return locals()", "docs/api.md", "exec"), namespace)
    result = await namespace["_example"]()
    assert [r["msg"] for r in result["results"]] == ["error: tool timed out"]
    assert result["run"]["run_id"] == "mag-a1b2c3d4"
    assert "error: tool timed out" in capsys.readouterr().out


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(("layer", "forbidden"), [("backends", {"lakehouse", "magsag"}), ("lakehouse", {"magsag"})])
def test_lower_layers_never_import_higher_ones(layer: str, forbidden: set[str]) -> None:
    for path in (ROOT / layer).rglob("*.py"):
        bad = _imports(path) & forbidden
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
