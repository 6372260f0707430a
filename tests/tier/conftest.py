"""Fixtures of the tiering tests: fresh hot stores (parametrized by kind) loaded with a small,
deterministic demo, and the readers that compare hot store + lake with the original.

``hot`` yields a :class:`HotCase` of each kind in :data:`HOT_KINDS` (SQLite here; the
PostgreSQL tiering work adds ``"postgres"`` with its own ``HotCase`` maker); ``hot_factory``
makes more stores of the same kind (the crash tests need a fresh one per fault point).
Lakes come from ``tests/lake_fixtures.py`` (``lake_case``: local folder and S3).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS

from tests.tier.helpers import END, HotCase, load
from tests.tier.pg_case import make_postgres_case

_EV = ", ".join(EVENT_COLUMNS)
_RUN = ", ".join(RUN_COLUMNS)


async def make_sqlite(tmp_path: Path, name: str) -> HotCase:
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    db = tmp_path / f"{name}.db"
    backend = SQLiteStorageBackend(db_path=db)
    await backend.initialize()

    async def events() -> list[tuple[Any, ...]]:
        return await backend.read(lambda c: c.execute(f"SELECT {_EV} FROM events").fetchall())

    async def runs() -> list[tuple[Any, ...]]:
        return await backend.read(lambda c: c.execute(f"SELECT {_RUN} FROM runs").fetchall())

    return HotCase(
        kind="sqlite",
        backend=backend,
        env={"MAGSAG_STORAGE_BACKEND": "sqlite", "MAGSAG_STORAGE_DB_PATH": str(db)},
        event_rows=events,
        run_rows=runs,
        cleanup=None,
    )


HOT_KINDS: dict[str, Callable[[Path, str], Awaitable[HotCase]]] = {
    "sqlite": make_sqlite,
    "postgres": make_postgres_case,
}


@pytest.fixture(params=sorted(HOT_KINDS))
async def hot_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[HotCase]]]:
    made: list[HotCase] = []

    async def make(*, demo: bool = True, **kw: Any) -> HotCase:
        case = await HOT_KINDS[request.param](tmp_path, f"hot{len(made)}")
        made.append(case)
        if demo:
            await load(case, **kw)
        return case

    try:
        yield make
    finally:
        for case in made:
            await case.close()


@pytest.fixture
async def hot(hot_factory: Callable[..., Awaitable[HotCase]]) -> HotCase:
    """A fresh hot store holding the test demo (4 days up to END, runs still running at the end)."""
    return await hot_factory()


@pytest.fixture
def now() -> Any:
    return END
