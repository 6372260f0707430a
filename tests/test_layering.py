"""Store knowledge stays behind the contract: the lake layer and the front never name a hot store.

What a layer above ``backends/`` needs from a hot store is an optional capability
(:mod:`magsag.backends.capabilities`) the store implements in its own package. So no file
in ``lakehouse/`` or ``magsag/`` imports or names a hot store's module or class, sniffs
``__module__``, opens SQLite or PostgreSQL itself, or holds their SQL dialect.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each pattern names a store module or class, or a construct of the SQLite or PostgreSQL
# dialect (or their DuckDB scanners) that only a query aimed at the hot store would hold.
FORBIDDEN = {
    "hot-store module": re.compile(r"\bbackends[./](sqlite|postgres)\b"),
    "hot-store class": re.compile(
        r"\b(SQLiteStorageBackend|PostgresStorageBackend|SQLiteTierSource|PostgresTierSource)\b"
    ),
    "module sniffing": re.compile(r"__module__"),
    "driver import": re.compile(r"^\s*(import|from)\s+(sqlite3|asyncpg|psycopg)\b", re.M),
    "DuckDB scanner of a hot store": re.compile(
        r"\b(sqlite|postgres)_(query|scan|scanner)\s*\(|TYPE\s+(sqlite|postgres)\b", re.I
    ),
    "SQLite dialect": re.compile(r"\bjson_extract\s*\(|\bPRAGMA\s+\w+|\bsqlite_(master|sequence)\b|\bbm25\s*\("),
    "PostgreSQL dialect": re.compile(
        r"\bjsonb_\w+\s*\(|::(jsonb|float8)\b|\bpg_\w+\s*\(|\$\d+\b|percentile_cont|to_tsquery"
    ),
}

# The documented import paths re-export the stores by design (docs/api.md); the legacy
# importer reads the old tool's own SQLite cost files, not the hot store.
ALLOWED = {
    "magsag/storage/backends/sqlite.py": {"hot-store module", "hot-store class"},
    "magsag/storage/backends/postgres.py": {"hot-store module", "hot-store class"},
    "magsag/ingest/legacy_costs.py": {"driver import", "SQLite dialect"},
    # the guard's docs name the statements it refuses (PRAGMA)
    "lakehouse/sqlguard.py": {"SQLite dialect"},
}


def _files() -> list[Path]:
    return sorted(p for layer in ("lakehouse", "magsag") for p in (ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_hot_store_knowledge_above_backends(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    text = path.read_text(encoding="utf-8")
    found = []
    for what, pattern in FORBIDDEN.items():
        if what in ALLOWED.get(rel, set()):
            continue
        m = pattern.search(text)
        if m:
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{rel}:{line}: {what} ({m.group(0).strip()!r})")
    assert not found, "hot-store knowledge belongs behind a capability in backends/:\n" + "\n".join(found)


def test_the_patterns_catch_what_they_are_for() -> None:
    """Each pattern fires on the kind of line it exists to keep out (so the test can fail)."""
    samples = {
        "hot-store module": "from magsag.backends.sqlite.store import X",
        "hot-store class": "isinstance(hot, PostgresStorageBackend)",
        "module sniffing": 'if cls.__module__ == "x":',
        "driver import": "import sqlite3",
        "DuckDB scanner of a hot store": "SELECT * FROM sqlite_query('h', 'q')",
        "SQLite dialect": "json_extract(payload, '$.name') = ?",
        "PostgreSQL dialect": "payload ->> 'name' = $1",
    }
    for what, line in samples.items():
        assert FORBIDDEN[what].search(line), what
