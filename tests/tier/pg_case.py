"""The PostgreSQL hot store of the tiering tests: a fresh schema per store.

Registered in ``tests/tier/conftest.py`` as ``HOT_KINDS["postgres"]``, so every tiering test
that takes ``hot``/``hot_factory`` runs on PostgreSQL too. Unreachable server: skipped with
the reason locally, a failure under CI (``tests/conftest.py``: ``make_postgres``).
Rows are read back the way the export writes them: ``ts`` as integer microseconds,
``payload``/``metrics`` as PostgreSQL's JSON text, ``tags`` as JSON text (like SQLite's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS

from tests.conftest import make_postgres
from tests.tier.helpers import HotCase

_EV = ", ".join("payload::text" if c == "payload" else c for c in EVENT_COLUMNS)
_RUN = ", ".join("metrics::text" if c == "metrics" else c for c in RUN_COLUMNS)
_TAGS = RUN_COLUMNS.index("tags")


async def make_postgres_case(tmp_path: Path, name: str) -> HotCase:
    backend, env, cleanup = make_postgres(tmp_path)
    await backend.initialize()
    s = backend.schema

    async def events() -> list[tuple[Any, ...]]:
        rows = await backend.read(lambda c: c.fetch(f"SELECT {_EV} FROM {s}.events"))
        return [tuple(r) for r in rows]

    async def runs() -> list[tuple[Any, ...]]:
        rows = await backend.read(lambda c: c.fetch(f"SELECT {_RUN} FROM {s}.runs"))
        out = []
        for r in rows:
            row = list(r)
            row[_TAGS] = json.dumps(list(row[_TAGS] or []), ensure_ascii=False)
            out.append(tuple(row))
        return out

    return HotCase(kind="postgres", backend=backend, env=env, event_rows=events, run_rows=runs, cleanup=cleanup)
