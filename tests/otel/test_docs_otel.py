"""docs/otel.md's mapping tables are the code's constants (magsag/otel/mapping.py)."""

from __future__ import annotations

from pathlib import Path

from magsag.otel.docs import blocks, render
from magsag.otel.mapping import TABLES

DOC = Path(__file__).resolve().parents[2] / "docs" / "otel.md"


def test_mapping_tables_are_generated_from_the_code() -> None:
    text = DOC.read_text()
    assert text == render(text), "docs/otel.md is stale: run `python3 -m magsag.otel.docs --write`"


def test_every_mapping_table_is_in_the_docs() -> None:
    assert sorted(blocks(DOC.read_text())) == sorted(TABLES)
