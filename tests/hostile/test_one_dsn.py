"""Item 17: one DSN parser for every PostgreSQL path: ``data sql`` (DuckDB's scanner) honours
``sslmode`` and ``?host=`` like ``query`` and ``tier`` (asyncpg); unknown parameters are
refused by name, on every path (issue 14)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.cli_helpers import magsag
from tests.conftest import PG_DSN, pg_unavailable
from tests.hostile.conftest import one_line

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_env(tmp_path: Path) -> dict[str, str]:
    reason = pg_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"hostile_{uuid.uuid4().hex[:8]}"
    env = {
        "MAGSAG_STORAGE_BACKEND": "postgres",
        "MAGSAG_STORAGE_PG_SCHEMA": schema,
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
    }
    res = magsag("data", "init", "--dsn", PG_DSN, env=env)
    assert res.code == 0, res.err
    yield env
    import asyncio

    from tests.conftest import _drop_pg_schema

    asyncio.run(_drop_pg_schema(schema))


def _with(query: str) -> str:
    return PG_DSN + ("&" if "?" in PG_DSN else "?") + query


COMMANDS = [("init",), ("sql", "SELECT count(*) FROM runs"), ("stats",)]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_every_path_honours_the_same_parameters(pg_env: dict[str, str], args: tuple[str, ...]) -> None:
    ok = magsag("data", *args, "--dsn", _with("sslmode=disable"), env=pg_env)
    assert ok.code == 0, ok.err
    # the test server speaks no TLS: every path must try it, and fail in one line
    res = magsag("data", *args, "--dsn", _with("sslmode=require"), env=pg_env)
    assert res.code in (1, 2), res.out + res.err
    one_line(res.err)
    no_host = PG_DSN.replace("@127.0.0.1:5432", "@").replace("@localhost:5432", "@")
    assert "@/" in no_host
    res = magsag("data", *args, "--dsn", no_host + "?host=/nonexistent-socket-dir", env=pg_env)
    assert res.code in (1, 2), res.out + res.err
    one_line(res.err)
    res = magsag("data", *args, "--dsn", _with("frobnicate=1"), env=pg_env)
    assert res.code == 2
    assert "'frobnicate' is not supported" in one_line(res.err)
