"""Test helpers for ClickHouse: one chDB folder per test process, fresh databases, engines.

chDB serves one data folder per process, so every test in a run shares :func:`chdb_dir`
and isolates itself in a fresh database (``t_<hex>``) that it drops afterwards. A remote
server is used only when ``MAGSAG_TEST_CLICKHOUSE_URL`` is set (no server can be installed
on these machines); otherwise its tests are skipped with the reason, in CI too.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from magsag.backends.schema import Event, Run
from magsag.lakehouse.clickhouse.engines import Engine, open_engine
from magsag.lakehouse.settings import StorageSettings, load_settings

REMOTE_URL = os.environ.get("MAGSAG_TEST_CLICKHOUSE_URL")
NO_REMOTE = "no ClickHouse server: set MAGSAG_TEST_CLICKHOUSE_URL to run the clickhouse-connect path"
DEMO_END = datetime(2025, 10, 26, 6, 0, tzinfo=UTC)

_dir: list[str] = []


def chdb_dir() -> str:
    """The chDB data folder of this test process (removed at exit).

    One engine stays open on it for the whole run: chDB starts its embedded server with the
    first session and stops it with the last, which would cost seconds per test.
    """
    if not _dir:
        from magsag.lakehouse.clickhouse.engines import ChdbEngine

        path = tempfile.mkdtemp(prefix="magsag-chdb-")
        keeper = ChdbEngine(path, "default")
        atexit.register(shutil.rmtree, path, True)
        atexit.register(keeper.close)
        _dir.append(path)
    return _dir[0]


def ch_settings(kind: str, database: str, **more: Any) -> StorageSettings:
    """Settings selecting chDB (the shared folder) or the test server, and ``database``."""
    if kind == "remote":
        if not REMOTE_URL:
            pytest.skip(NO_REMOTE)
        return load_settings(clickhouse_url=REMOTE_URL, clickhouse_database=database, **more)
    return load_settings(clickhouse_path=chdb_dir(), clickhouse_database=database, **more)


def ch_env(kind: str, database: str) -> dict[str, str]:
    """Environment variables selecting the same engine and database (for CLI tests)."""
    env = {"MAGSAG_CLICKHOUSE_DATABASE": database}
    if kind == "remote":
        env["MAGSAG_CLICKHOUSE_URL"] = REMOTE_URL or ""
    else:
        env["MAGSAG_CLICKHOUSE_PATH"] = chdb_dir()
    return env


def new_database() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@contextmanager
def fresh_engine(kind: str = "chdb", **more: Any) -> Iterator[Engine]:
    """An engine on a new, empty database, dropped afterwards."""
    settings = ch_settings(kind, new_database(), **more)
    engine = open_engine(settings)
    try:
        yield engine
    finally:
        try:
            engine.command(f"DROP DATABASE IF EXISTS `{engine.database}`")
        finally:
            engine.close()


def demo_data(days: int = 3, runs_per_day: int = 4, seed: int = 3) -> tuple[list[Event], list[Run]]:
    from magsag.ingest.demo import DemoGenerator

    events: list[Event] = []
    runs: list[Run] = []
    for batch in DemoGenerator(days=days, runs_per_day=runs_per_day, seed=seed, end=DEMO_END):
        events.extend(batch.events)
        runs.extend(batch.runs)
    return events, runs
