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
    from magsag.backends.schema import utc_now
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    async with SQLiteStorageBackend(sqlite_path) as s:
        await s.append_event("mag-1b6bf273", "offer-mag", "log", utc_now(), message="error: tool timed out")
    monkeypatch.setenv("MAGSAG_STORAGE_DB_PATH", str(sqlite_path))
    doc = (ROOT / "docs" / "api.md").read_text()
    code = re.search(r"<!-- example: api -->\n```python\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    body = textwrap.indent(code, "    ")
    namespace: dict[str, Any] = {}
    exec(compile(f"async def _example():\n{body}\n    return locals()", "docs/api.md", "exec"), namespace)
    result = await namespace["_example"]()
    assert [r["msg"] for r in result["results"]] == ["error: tool timed out"]
    assert result["run"]["run_id"] == "mag-1b6bf273"
    assert "error: tool timed out" in capsys.readouterr().out


FOLDERS = {"magsag.backends": ROOT / "backends", "magsag.lakehouse": ROOT / "lakehouse", "magsag": ROOT / "magsag"}


def _is_module(name: str) -> bool:
    """Whether ``name`` (``magsag.x.y``) is a module or package of this repository."""
    for prefix, folder in FOLDERS.items():
        if name == prefix or name.startswith(prefix + "."):
            rest = name[len(prefix) :].lstrip(".").replace(".", "/")
            base = folder / rest if rest else folder
            return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
    return False


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names), including ``"magsag.x:Attr"`` targets and
    ``import_module("magsag.x")`` calls: an import by name is an import too."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # "pkg.module:Attr" (a registry or entry-point target)
            target = re.fullmatch(r"(magsag(?:\.[a-z_]+)+):\w+", node.value.strip())
            if target and _is_module(target.group(1)):
                names.add(target.group(1))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _is_module(arg.value):
                names.add(arg.value)
    return names


# What each layer may import of this project (docs/architecture.md): lower layers never
# import higher ones, and nothing imports the folders by their old top-level names.
LAYERS = {
    "backends": ("magsag.backends",),
    "lakehouse": ("magsag.backends", "magsag.lakehouse"),
    "magsag": ("magsag",),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_lower_layers_never_import_higher_ones(layer: str) -> None:
    allowed = LAYERS[layer]
    for path in (ROOT / layer).rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in ("backends", "lakehouse"), f"{path.relative_to(ROOT)} imports {name} (use magsag.{name})"
            if top == "magsag" and name != "magsag":
                assert name.startswith(allowed), f"{path.relative_to(ROOT)} (layer {layer}) imports {name}"


def test_ci_lints_before_it_tests() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    steps = ('eval "$INSTALL_STEP"', "\nruff check .", "\nruff format --check .", 'eval "$TEST_STEP"')
    order = [ci.index(s) for s in steps]
    assert order == sorted(order), "CI installs, lints, then runs the tests"
