"""The standard AWS credential chain, read back through s3fs, DuckDB and Polars on real S3 servers.

No ``MAGSAG_STORAGE_S3_*`` credentials here: a profile of a shared credentials file
(SeaweedFS, which enforces credentials) and temporary credentials with a session token
(moto, behind a recording proxy that shows what each engine signs with).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from magsag.backends.duckdb_ext import new_connection
from magsag.backends.errors import ConfigError
from magsag.lakehouse.duckdb_lake import attach_lake, lake_extensions
from magsag.lakehouse.objstore import Lake, open_lake, retry
from magsag.lakehouse.settings import load_settings

from tests.lake_fixtures import S3Server, clear_fs_caches

pytestmark = pytest.mark.s3

TABLE = pa.table({"n": list(range(100)), "s": [f"row {i}" for i in range(100)]})


def _chain_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **aws: str) -> None:
    """Only the AWS variables given (and empty shared files unless given); no instance metadata."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "MAGSAG_STORAGE_S3_")):
            monkeypatch.delenv(name)
    empty = tmp_path / "empty-aws-file"
    empty.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    clear_fs_caches()


def _lake(url: str, endpoint: str) -> Lake:
    settings = load_settings(lake_url=url, s3_endpoint_url=endpoint, s3_region="us-east-1", s3_retries=0)
    lake = open_lake(url, settings)
    assert lake.s3 is not None and not lake.s3.explicit
    return lake


def _parquet() -> bytes:
    buf = io.BytesIO()
    pq.write_table(TABLE, buf)
    return buf.getvalue()


def _read_back_three_ways(lake: Lake) -> None:
    """Write with s3fs; read back with s3fs, DuckDB (httpfs secret) and Polars (storage options)."""
    retry(lake, "writing", lake.fs.pipe_file, lake.path("t.parquet"), _parquet())
    assert pq.read_table(io.BytesIO(retry(lake, "reading", lake.fs.cat_file, lake.path("t.parquet")))) == TABLE
    con = new_connection(extensions=lake_extensions(lake))
    try:
        attach_lake(con, lake)
        assert con.execute(f"SELECT count(*), sum(n) FROM read_parquet('{lake.uri('t.parquet')}')").fetchone() == (
            100,
            4950,
        )
    finally:
        con.close()
    df = pl.scan_parquet(lake.uri("t.parquet"), storage_options=lake.storage_options()).collect()
    assert df.height == 100 and df["n"].sum() == 4950


def test_a_profile_of_the_shared_credentials_file(s3_server: S3Server, tmp_path: Path, monkeypatch) -> None:
    creds = tmp_path / "credentials"
    wrong = "wrong-" + os.urandom(6).hex()
    creds.write_text(
        f"[magsag-lake]\naws_access_key_id = {s3_server.key}\naws_secret_access_key = {s3_server.secret}\n\n"
        f"[stale]\naws_access_key_id = {s3_server.key}\naws_secret_access_key = {wrong}\n"
    )
    _chain_only(monkeypatch, tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(creds), AWS_PROFILE="magsag-lake")
    _read_back_three_ways(_lake(s3_server.fresh_url(), s3_server.endpoint))

    # a profile with a wrong secret: one line from each engine, no credential in it
    _chain_only(monkeypatch, tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(creds), AWS_PROFILE="stale")
    lake = _lake(s3_server.fresh_url(), s3_server.endpoint)
    with pytest.raises(ConfigError) as err:
        retry(lake, "writing", lake.fs.pipe_file, lake.path("t.parquet"), _parquet())
    assert "access denied" in str(err.value) and wrong not in str(err.value) and s3_server.key not in str(err.value)
    con = new_connection(extensions=lake_extensions(lake))
    try:
        attach_lake(con, lake)
        with pytest.raises(Exception) as derr:
            con.execute(f"SELECT count(*) FROM read_parquet('{lake.uri('t.parquet')}')")
        assert wrong not in str(derr.value)
        secrets = con.execute("SELECT secret_string FROM duckdb_secrets()").fetchall()
        assert wrong not in str(secrets) and "provider=credential_chain" in str(secrets)
    finally:
        con.close()
    with pytest.raises(Exception) as perr:
        pl.scan_parquet(lake.uri("t.parquet"), storage_options=lake.storage_options()).collect()
    assert wrong not in str(perr.value)


def test_a_session_token_reaches_every_engine(moto_s3, flaky_proxy, tmp_path: Path, monkeypatch) -> None:
    moto_s3.make_bucket("token-lake")
    proxy = flaky_proxy(moto_s3.endpoint)  # fails nothing: records what each client sends
    token = "tok-" + os.urandom(12).hex()
    _chain_only(
        monkeypatch,
        tmp_path,
        AWS_ACCESS_KEY_ID="ASIATEMPORARY",
        AWS_SECRET_ACCESS_KEY="temp-secret",
        AWS_SESSION_TOKEN=token,
    )
    lake = _lake("s3://token-lake/p", proxy.endpoint)
    assert lake.storage_options()["aws_session_token"] == token
    _read_back_three_ways(lake)
    signed = [h for h in proxy.heads if b"authorization:" in h.lower()]
    agents = {_agent(h) for h in signed}
    assert {"aiobotocore", "duckdb", "polars"} <= agents, agents  # s3fs, DuckDB, Polars (object_store)
    for head in signed:
        assert f"x-amz-security-token: {token}".encode() in head.lower().replace(b"\r", b""), _agent(head)


def _agent(head: bytes) -> str:
    for line in head.decode("latin-1").lower().split("\r\n"):
        if line.startswith("user-agent:"):
            value = line.split(":", 1)[1].strip()
            for name in ("aiobotocore", "duckdb", "polars"):
                if name in value:
                    return name
            return value
    return "?"


def test_explicit_settings_win_and_stay_explicit(s3_server: S3Server, tmp_path: Path, monkeypatch) -> None:
    _chain_only(monkeypatch, tmp_path, AWS_ACCESS_KEY_ID="not-this-one", AWS_SECRET_ACCESS_KEY="nor-this")
    url = s3_server.fresh_url()
    settings = load_settings(**{k.removeprefix("MAGSAG_STORAGE_").lower(): v for k, v in s3_server.env(url).items()})
    lake = open_lake(url, settings)
    assert lake.s3 is not None and lake.s3.explicit and s3_server.secret not in repr(lake)
    _read_back_three_ways(lake)
