"""Shared fixtures: one ``backend`` fixture parametrized over every hot store.

A backend whose server is unreachable is skipped with the reason, except in CI
(``CI`` set), where a missing service is a failure: CI must start what the tests need.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from magsag.backends.base import StorageBackend
from magsag.backends.schema import NOW_ENV

from tests.clock import PINNED_NOW_ISO

# Property tests draw the same examples on every run (a CI result never depends on luck)
# and keep no example database in the tree.
hypothesis_settings.register_profile("magsag", derandomize=True, database=None)
hypothesis_settings.load_profile("magsag")

pytest_plugins = ["tests.lake_fixtures"]

PG_DSN = os.environ.get("MAGSAG_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = bool(os.environ.get("CI"))


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)


_pg_checked: dict[str, str | None] = {}


def pg_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    if "reason" not in _pg_checked:
        reason = None
        try:
            import asyncpg
            import magsag.backends.postgres.store  # noqa: F401

            async def probe() -> None:
                conn = await asyncpg.connect(PG_DSN, timeout=5)
                await conn.close()

            # Called from async fixtures too: probe on a fresh loop in its own thread.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, probe()).result()
        except ImportError as exc:
            reason = f"PostgreSQL backend not importable: {exc}"
        except Exception as exc:
            reason = f"PostgreSQL at {PG_DSN} unreachable: {type(exc).__name__}"
        _pg_checked["reason"] = reason
    return _pg_checked["reason"]


async def _drop_pg_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def make_sqlite(tmp_path: Path) -> tuple[StorageBackend, dict[str, str], Callable[[], Any] | None]:
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    db = tmp_path / "hot.db"
    return (
        SQLiteStorageBackend(db_path=db),
        {"MAGSAG_STORAGE_BACKEND": "sqlite", "MAGSAG_STORAGE_DB_PATH": str(db)},
        None,
    )


def make_postgres(tmp_path: Path) -> tuple[StorageBackend, dict[str, str], Callable[[], Any] | None]:
    reason = pg_unavailable()
    if reason:
        _missing(reason)
    from magsag.backends.postgres.store import PostgresStorageBackend

    schema = f"t_{uuid.uuid4().hex[:12]}"
    env = {"MAGSAG_STORAGE_BACKEND": "postgres", "MAGSAG_STORAGE_DSN": PG_DSN, "MAGSAG_STORAGE_PG_SCHEMA": schema}
    return PostgresStorageBackend(PG_DSN, schema=schema), env, lambda: _drop_pg_schema(schema)


def tiered(make: Callable[[Path], Any]) -> Callable[[Path], Any]:
    """The same hot store behind the tier-aware backend, with half of the data moved to a
    lake before every read (tests/tier_sim.py): the contract must hold across tiers."""

    def make_tiered(tmp_path: Path) -> tuple[StorageBackend, dict[str, str], Callable[[], Any] | None]:
        from magsag.lakehouse.objstore import open_lake

        from tests.tier_sim import HalfTieredBackend

        hot, env, cleanup = make(tmp_path)
        lake = tmp_path / "lake"
        return HalfTieredBackend(hot, open_lake(str(lake))), {**env, "MAGSAG_STORAGE_LAKE_URL": str(lake)}, cleanup

    return make_tiered


BACKENDS: dict[str, Callable[[Path], tuple[StorageBackend, dict[str, str], Callable[[], Any] | None]]] = {
    "sqlite": make_sqlite,
    "postgres": make_postgres,
    "sqlite+lake": tiered(make_sqlite),
    "postgres+lake": tiered(make_postgres),
}


class BackendCase:
    """A fresh, initialized backend plus the environment that selects the same store."""

    def __init__(self, kind: str, backend: StorageBackend, env: dict[str, str]):
        self.kind, self.backend, self.env = kind, backend, env


@contextlib.asynccontextmanager
async def open_case(
    kind: str,
    make: Callable[[Path], tuple[StorageBackend, dict[str, str], Callable[[], Any] | None]],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> AsyncIterator[BackendCase]:
    """Make, initialize, hand out and clean up one backend case (every ``backend_case`` fixture)."""
    backend, env, cleanup = make(tmp_path)
    if request.node.get_closest_marker("hot_store") is not None and hasattr(backend, "paused"):
        backend.paused = True  # type: ignore[attr-defined]  # hot retention: nothing is tiered in this test
    await backend.initialize()
    try:
        yield BackendCase(kind, backend, env)
    finally:
        await backend.close()
        if cleanup is not None:
            await cleanup()


@pytest.fixture(params=sorted(BACKENDS))
async def backend_case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BackendCase]:
    async with open_case(request.param, BACKENDS[request.param], request, tmp_path) as case:
        yield case


@pytest.fixture
async def backend(backend_case: BackendCase) -> StorageBackend:
    return backend_case.backend


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture(scope="session", autouse=True)
def _pinned_clock() -> Iterator[None]:
    """``MAGSAG_NOW`` for session- and module-scoped fixtures too (they start before ``_isolated_env``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(NOW_ENV, PINNED_NOW_ISO)
        yield


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own MAGSAG_* settings or .env, nor the wall clock.

    ``MAGSAG_NOW`` pins the code's one clock (``utc_now()``) to tests/clock.py's
    ``PINNED_NOW`` unless a test sets its own; CLI calls and child processes inherit it.
    """
    for key in list(os.environ):
        if key.startswith(("MAGSAG_STORAGE_", "MAGSAG_CLICKHOUSE_")) or key == "MAGSAG_RUNS_BASE_DIR":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(NOW_ENV, PINNED_NOW_ISO)
    monkeypatch.chdir(tmp_path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long sweeps (``slow``) first: on parallel workers the run ends when its last long test
    does, so starting them early keeps the workers busy to the end. The order is the same in
    every worker (a stable sort of the same collection), as xdist requires."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


_early_phoenix: list[Any] = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Start Phoenix (tests/otel) at once, in the process that runs the session (the xdist
    controller, before its workers start and inherit its URL, or the only process): it takes
    minutes to answer on a busy machine, more than a test may wait. Only when the run may
    reach tests/otel and Phoenix is installed."""
    config = session.config
    if hasattr(config, "workerinput") or os.environ.get("MAGSAG_TEST_PHOENIX_URL"):
        return
    args = [str(a) for a in config.args] or ["tests"]
    if not any("otel" in a or Path(a).resolve() in (Path(__file__).parent, Path(__file__).parents[1]) for a in args):
        return
    if config.getoption("markexpr", "") or config.getoption("keyword", ""):
        return  # a selection: the fixture starts Phoenix if a selected test needs it
    import tempfile

    from tests.otel.conftest import PHOENIX_URL_ENV, phoenix_importable, start_phoenix

    if not phoenix_importable():
        return
    work = Path(tempfile.mkdtemp(prefix="magsag-phoenix-"))
    proc, url, _log = start_phoenix(work)
    _early_phoenix.append((proc, work))
    os.environ[PHOENIX_URL_ENV] = url


def pytest_sessionfinish(session: pytest.Session) -> None:
    import shutil

    from tests.otel.conftest import stop

    while _early_phoenix:
        proc, work = _early_phoenix.pop()
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)
