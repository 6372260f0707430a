"""Figures cannot rot: every benchmark writes its JSON through bench/_report.py, docs quote
figures only in blocks generated from those files, and code comments quote none."""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import tokenize
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))
RESULTS = sorted((BENCH / "results").glob("*.json"))
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _report() -> Any:
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "_report.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _report()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_saves_through_the_shared_helper(script: Path) -> None:
    tree = ast.parse(script.read_text())
    imported = any(
        isinstance(n, ast.ImportFrom) and n.module == "_report" and any(a.name == "save" for a in n.names)
        for n in ast.walk(tree)
    )
    called = any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "save" for n in ast.walk(tree))
    assert imported and called, f"{script.name} must record its figures with bench/_report.py's save()"


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_result_files_say_what_ran_where(path: Path) -> None:
    doc = orjson.loads(path.read_bytes())
    missing = [k for k in report.REQUIRED if k not in doc]
    assert not missing, f"{path.name} lacks {missing}: write it with bench/_report.py's save()"
    assert doc["bench"] == path.stem
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", doc["commit"]), doc["commit"]
    assert doc["command"].startswith(("python3 bench/", "python bench/")), doc["command"]
    assert isinstance(doc["machine"]["cpus"], int)
    assert set(doc["load"]) == {"1m", "5m", "15m"}
    assert report.leaves(doc["figures"]), f"{path.name} holds no figure"


def test_docs_blocks_are_rendered_from_the_result_files() -> None:
    names = {p.stem for p in RESULTS}
    stale = []
    for doc in DOCS:
        for name, body in report.blocks(doc.read_text()):
            assert name in names, f"{doc.name} quotes bench/results/{name}.json, which does not exist"
            if body != report.render(name):
                stale.append(f"{doc.name}: {name}")
    assert not stale, f"stale benchmark blocks {stale}: run `python3 bench/_report.py --docs`"


def test_render_shows_command_commit_load_and_each_figure() -> None:
    doc = {
        "bench": "x",
        "command": "python3 bench/x.py --n 10",
        "commit": "a" * 40,
        "machine": {"cpus": 2},
        "load": {"1m": 1.5, "5m": 2.0, "15m": 3.25},
        "measured_at": "2026-03-10T12:00:00+00:00",
        "figures": {"ours": {"rows_per_s": 12345}, "ratio": 0.934, "label": "text is not a figure"},
    }
    text = report.render("x", doc)
    assert "`python3 bench/x.py --n 10`" in text and "aaaaaaaaaaaa" in text and "1.5 / 2.0 / 3.25" in text
    assert "| `ours.rows_per_s` | 12,345 |" in text and "| `ratio` | 0.934 |" in text
    assert "label" not in text


# A figure someone measured by hand: a rate, a speed-up, or "measured" next to a number.
HAND_MEASURED = [
    re.compile(r"\b\d[\d,.]*\s*k?\s*(rows|events|spans|records|MB|MiB|GB)/s\b"),
    re.compile(r"\b(\d+(\.\d+)?\s*(x|×)|\w+ times)\s+(faster|slower)\b", re.I),
    re.compile(r"\bmeasured\b[^.]*?\d", re.I),
]
CODE_FOLDERS = ("backends", "lakehouse", "magsag")


def _prose(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment and docstring of a module."""
    source = path.read_text()
    out = [
        (tok.start[0], tok.string)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            text = ast.get_docstring(node, clean=False)
            if text:
                out.append((node.body[0].lineno, " ".join(text.split())))
    return out


def test_no_hand_measured_figure_in_comments_or_docstrings() -> None:
    found = []
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, text in _prose(path):
                for pattern in HAND_MEASURED:
                    m = pattern.search(text)
                    if m:
                        found.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)!r}")
    assert not found, "figures belong in bench/results/*.json, not in code prose:\n" + "\n".join(found)
