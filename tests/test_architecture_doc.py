"""docs/architecture.md names every module of the package once, and nothing that is not there."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("backends", "lakehouse", "magsag")
DOC = ROOT / "docs" / "architecture.md"
# A table row's first cell: `backends/base.py` (a module) or `backends/sqlite/` (a package, its __init__.py).
ROW = re.compile(r"^\| `((?:backends|lakehouse|magsag)/[\w/]*?(?:\.py|/)?)` \|", re.M)


def modules() -> set[str]:
    out = set()
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            out.add(rel.removesuffix("__init__.py"))
    return out


def named() -> Counter[str]:
    return Counter(ROW.findall(DOC.read_text()))


def test_every_module_is_named_once() -> None:
    counts = named()
    twice = [n for n, c in counts.items() if c > 1]
    assert not twice, f"named more than once: {twice}"
    missing = sorted(modules() - set(counts))
    assert not missing, f"add a row to docs/architecture.md for each of {missing}"


def test_nothing_named_is_missing_from_the_tree() -> None:
    gone = sorted(set(named()) - modules())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
