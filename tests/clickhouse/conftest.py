"""Fixtures for the ClickHouse tests: engines (chDB always, a server when configured),
demo lakes on a local folder and on a real S3 server (tests/lake_fixtures.py: SeaweedFS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from magsag.backends.schema import Event, Run
from magsag.lakehouse.clickhouse.engines import Engine
from magsag.lakehouse.objstore import Lake, open_lake

from tests.clickhouse_helpers import demo_data, fresh_engine
from tests.lake_builder import write_lake
from tests.lake_fixtures import open_test_lake


@pytest.fixture(params=["chdb", "remote"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def engine(engine_kind: str) -> Iterator[Engine]:
    with fresh_engine(engine_kind) as e:
        yield e


@pytest.fixture
def chdb() -> Iterator[Engine]:
    with fresh_engine("chdb") as e:
        yield e


@pytest.fixture(scope="module")
def demo() -> tuple[list[Event], list[Run]]:
    return demo_data()


@pytest.fixture
def local_lake(tmp_path: Path, demo: tuple[list[Event], list[Run]]) -> Lake:
    lake = open_lake(str(tmp_path / "lake"))
    write_lake(lake, *demo, files_per_day=2)
    return lake


# ----------------------------------------------------------------------- S3
# The S3 server is tests/lake_fixtures.py's ``s3_server`` (SeaweedFS on loopback, credentials
# enforced); ``s3_env`` selects a fresh prefix of its bucket.


@pytest.fixture
def s3_lake(s3_env: dict[str, str], demo: tuple[list[Event], list[Run]]) -> Lake:
    """The demo lake under a fresh prefix of the S3 bucket."""
    lake, _ = open_test_lake(s3_env)
    write_lake(lake, *demo, files_per_day=2)
    return lake
