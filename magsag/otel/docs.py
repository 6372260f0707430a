"""The mapping tables of docs/otel.md, generated from :mod:`magsag.otel.mapping`.

``python3 -m magsag.otel.docs`` prints them; ``python3 -m magsag.otel.docs --write`` puts them
between the ``<!-- mapping:NAME -->`` / ``<!-- /mapping -->`` markers of docs/otel.md. A test
fails when the file and the code differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from magsag.otel.mapping import TABLES

_BLOCK = re.compile(r"(<!-- mapping:(\w+) -->\n)(.*?)(<!-- /mapping -->)", re.DOTALL)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(name: str) -> str:
    _title, (left, right), rows = TABLES[name]
    lines = [f"| {left} | {right} |", "| --- | --- |"]
    lines += [f"| {_cell(a)} | {_cell(b)} |" for a, b in rows]
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """``text`` with every marked block replaced by the table the code defines."""

    def sub(mo: re.Match[str]) -> str:
        name = mo.group(2)
        if name not in TABLES:
            raise KeyError(f"docs/otel.md names an unknown mapping table {name!r}")
        return mo.group(1) + table(name) + mo.group(4)

    return _BLOCK.sub(sub, text)


def blocks(text: str) -> list[str]:
    return [mo.group(2) for mo in _BLOCK.finditer(text)]


def main(argv: list[str]) -> int:
    path = Path(__file__).resolve().parents[2] / "docs" / "otel.md"
    if "--write" in argv:
        path.write_text(render(path.read_text()))
        return 0
    for name, (title, _cols, _rows) in TABLES.items():
        sys.stdout.write(f"### {title}\n\n<!-- mapping:{name} -->\n{table(name)}<!-- /mapping -->\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
