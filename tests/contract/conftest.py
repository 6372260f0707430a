"""The contract suite's ``backend`` fixture: every hot store, plus the read-only backends.

Read-only backends (ClickHouse) get their data the way production does — written to a
hot store, tiered to a lake, loaded (see clickhouse_harness.py) — and run every test that
is not marked ``hot_store`` (retention and concurrent writers belong to hot stores).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.base import StorageBackend

from tests.conftest import BACKENDS, BackendCase, open_case


def make_clickhouse(tmp_path: Path) -> tuple[StorageBackend, dict[str, str], Callable[[], Any] | None]:
    from magsag.backends.sqlite.store import SQLiteStorageBackend
    from magsag.lakehouse.objstore import open_lake

    from tests.clickhouse_helpers import ch_env, ch_settings, new_database
    from tests.contract.clickhouse_harness import LakeLoadedClickHouse

    database = new_database()
    settings = ch_settings("chdb", database)
    backend = LakeLoadedClickHouse(
        settings, SQLiteStorageBackend(db_path=tmp_path / "hot.db"), open_lake(str(tmp_path / "lake"))
    )

    async def drop() -> None:
        from magsag.lakehouse.clickhouse.engines import open_engine

        with open_engine(settings) as engine:
            engine.command(f"DROP DATABASE IF EXISTS `{database}`")

    return backend, {"MAGSAG_STORAGE_BACKEND": "clickhouse", **ch_env("chdb", database)}, drop


def make_legacy_api(tmp_path: Path) -> tuple[StorageBackend, dict[str, str], Callable[[], Any] | None]:
    from tests.contract.legacy_backend import LegacyApiBackend

    db = tmp_path / "legacy.db"
    env = {
        "MAGSAG_STORAGE_BACKEND": "tests.contract.legacy_backend:LegacyApiBackend",
        "MAGSAG_STORAGE_DB_PATH": str(db),
    }
    return LegacyApiBackend(db), env, None


# A custom backend written against the public methods only, declaring no optional capability.
CUSTOM: dict[str, Callable[[Path], tuple[StorageBackend, dict[str, str], Callable[[], Any] | None]]] = {
    "legacy-api": make_legacy_api,
}

READ_ONLY: dict[str, Callable[[Path], tuple[StorageBackend, dict[str, str], Callable[[], Any] | None]]] = {
    "clickhouse": make_clickhouse,
}


@pytest.fixture(params=[*sorted(BACKENDS), *sorted(CUSTOM), *sorted(READ_ONLY)])
async def backend_case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BackendCase]:
    kind = request.param
    if kind in READ_ONLY and request.node.get_closest_marker("hot_store"):
        pytest.skip(f"{kind} is read-only: this test checks hot-store behaviour (retention, concurrent writers)")
    make = READ_ONLY.get(kind) or CUSTOM.get(kind) or BACKENDS[kind]
    async with open_case(kind, make, request, tmp_path) as case:
        yield case
