"""Object-store faults on real servers: one-line errors, nothing committed, a rerun succeeds."""

from __future__ import annotations

import base64
import logging
import os
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest
from magsag.backends.errors import BackendUnavailable, ConfigError, StorageError
from magsag.lakehouse import lakewriter, layout, manifest
from magsag.lakehouse.lakewriter import PartitionWriter, publish
from magsag.lakehouse.objstore import retry

from tests.lake import data
from tests.lake_fixtures import S3Server, clear_fs_caches, open_test_lake

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def day_rows() -> tuple[Any, list]:
    events, _ = data.demo(days=2, runs_per_day=6, seed=21)
    return data.busiest_day(events)


def _stage(lake: Any, day: Any, table: pa.Table, job: str = "job-1", **kw: Any) -> lakewriter.StagedFile:
    with PartitionWriter(lake, "events", day, job, **kw) as w:
        w.write(table)
        return w.finish()


def _one_line(exc: BaseException, *secrets: str) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and len(msg) < 400, msg
    for s in secrets:
        assert s not in msg, "a credential leaked into the message"
    return msg


def _nothing_committed(lake: Any) -> None:
    clear_fs_caches()
    lake.fs.invalidate_cache()
    assert manifest.read_entries(lake, "events") == []
    assert lakewriter.list_files(lake, "events") == []


@pytest.mark.parametrize("which", ["secret", "key"])
def test_wrong_credentials_say_access_denied_without_the_secret(s3_server: S3Server, day_rows, which: str) -> None:
    day, rows = day_rows
    url = s3_server.fresh_url()
    wrong = "wrong-" + os.urandom(6).hex()
    env = s3_server.env(url, MAGSAG_STORAGE_S3_RETRIES="0")
    env["MAGSAG_STORAGE_S3_SECRET_ACCESS_KEY" if which == "secret" else "MAGSAG_STORAGE_S3_ACCESS_KEY_ID"] = wrong
    lake, _ = open_test_lake(env)
    with pytest.raises(ConfigError) as err:
        _stage(lake, day, data.sorted_table("events", rows))
    msg = _one_line(err.value, wrong, s3_server.secret)
    assert msg.startswith(f"access denied to {url}") and msg.endswith("(check credentials)")
    with pytest.raises(ConfigError, match="access denied"):
        lakewriter.committed_entry(lake, layout.data_path("events", day, "job-1"))
    good, _ = open_test_lake(s3_server.env(url))
    _nothing_committed(good)


def test_missing_bucket_is_named(s3_server: S3Server, day_rows) -> None:
    day, rows = day_rows
    lake, _ = open_test_lake(s3_server.env("s3://no-such-bucket-here/lake", MAGSAG_STORAGE_S3_RETRIES="0"))
    with pytest.raises(ConfigError) as err:
        _stage(lake, day, data.sorted_table("events", rows))
    msg = _one_line(err.value, s3_server.secret)
    assert msg.startswith("bucket no-such-bucket-here does not exist")


def test_server_down_before_upload_then_rerun(s3_server_factory, day_rows) -> None:
    day, rows = day_rows
    server: S3Server = s3_server_factory()
    url = server.fresh_url()
    lake, _ = open_test_lake(server.env(url, MAGSAG_STORAGE_S3_RETRIES="1"))
    table = data.sorted_table("events", rows)
    with PartitionWriter(lake, "events", day, "job-1") as w:
        w.write(table)
        server.stop()
        with pytest.raises(BackendUnavailable) as err:
            w.finish()
    msg = _one_line(err.value, server.secret)
    assert msg.startswith(f"S3 endpoint {server.endpoint} unreachable while uploading")

    server.start()
    lake, _ = open_test_lake(server.env(url))
    _nothing_committed(lake)
    entry = publish(lake, _stage(lake, day, table))
    assert data.live_rows(lake, "events") == Counter(rows) and entry.rows == len(rows)


def test_server_killed_mid_upload_then_rerun(s3_server_factory, day_rows, monkeypatch) -> None:
    day, rows = day_rows
    server: S3Server = s3_server_factory()
    url = server.fresh_url()
    lake, _ = open_test_lake(server.env(url, MAGSAG_STORAGE_S3_RETRIES="1"))
    # ~14 MB of incompressible payloads, sent in 5 MB parts: the server dies after the first part
    monkeypatch.setattr(lakewriter, "UPLOAD_CHUNK", 5 << 20)
    base = data.sorted_table("events", rows)
    n = 16_000
    big = base.take([i % base.num_rows for i in range(n)])
    big = big.set_column(0, "event_id", pa.array([f"{i:08d}-{r}" for i, r in enumerate(big.column(0).to_pylist())]))
    blobs = ['{"blob":"' + base64.b64encode(os.urandom(900)).decode() + '"}' for _ in range(n)]
    big = big.set_column(7, "payload", pa.array(blobs))
    big = big.sort_by([(c, "ascending") for c in lakewriter.SORT_KEYS["events"]])
    sent: list[int] = []

    def progress(nbytes: int) -> None:
        sent.append(nbytes)
        server.kill()

    with pytest.raises(BackendUnavailable) as err:
        _stage(lake, day, big, progress=progress)
    assert sent and sum(sent) < 10 << 20, "the upload was cut after its first part"
    _one_line(err.value, server.secret)

    server.start()
    lake, _ = open_test_lake(server.env(url))
    _nothing_committed(lake)
    staged = _stage(lake, day, big)
    assert staged.bytes > 10 << 20
    entry = publish(lake, staged)
    assert entry.rows == n and lakewriter.read_keys(lake, entry.path).num_rows == n


def test_server_down_during_publish_resumes_with_the_same_staged_file(s3_server_factory, day_rows) -> None:
    day, rows = day_rows
    server: S3Server = s3_server_factory()
    url = server.fresh_url()
    lake, _ = open_test_lake(server.env(url, MAGSAG_STORAGE_S3_RETRIES="1"))
    staged = _stage(lake, day, data.sorted_table("events", rows))
    server.kill()
    with pytest.raises(BackendUnavailable) as err:
        publish(lake, staged)
    _one_line(err.value, server.secret)
    server.start()
    lake, _ = open_test_lake(server.env(url))
    assert lakewriter.committed_entry(lake, staged.final_rel) is None
    entry = publish(lake, lakewriter.StagedFile.from_json(staged.to_json()))
    assert entry.checksum == staged.checksum
    assert data.live_rows(lake, "events") == Counter(rows)


@pytest.mark.parametrize("mode", ["reset", "503"])
def test_transient_failures_are_retried(s3_server: S3Server, flaky_proxy, day_rows, mode: str) -> None:
    day, rows = day_rows
    proxy = flaky_proxy(s3_server.endpoint)
    url = s3_server.fresh_url()
    env = s3_server.env(url, MAGSAG_STORAGE_S3_ENDPOINT_URL=proxy.endpoint)
    clear_fs_caches()
    lake, _ = open_test_lake(env)
    proxy.fail(4, mode)
    entry = publish(lake, _stage(lake, day, data.sorted_table("events", rows)))
    assert proxy.failed == 4
    assert entry.rows == len(rows) and data.live_rows(lake, "events") == Counter(rows)

    # failures that outlast the retries: one line, nothing committed
    clear_fs_caches()
    lake, _ = open_test_lake({**env, "MAGSAG_STORAGE_S3_RETRIES": "1"})
    proxy.fail(10_000, mode)
    with pytest.raises(StorageError) as err:
        _stage(lake, day, data.sorted_table("events", rows), job="job-2")
    msg = _one_line(err.value, s3_server.secret)
    assert isinstance(err.value, BackendUnavailable), msg
    if mode == "503":
        assert "kept failing after 2 attempts" in msg and "SlowDown" in msg
    proxy.fail(0)
    clear_fs_caches()
    lake, _ = open_test_lake(env)
    assert lakewriter.committed_entry(lake, layout.data_path("events", day, "job-2")) is None


def test_moto_is_another_s3_server_the_writer_works_with(moto_s3, day_rows) -> None:
    day, rows = day_rows
    moto_s3.make_bucket("moto-lake")
    lake, _ = open_test_lake(moto_s3.env("s3://moto-lake/prefix"))
    entry = publish(lake, _stage(lake, day, data.sorted_table("events", rows)))
    assert entry.rows == len(rows) and data.live_rows(lake, "events") == Counter(rows)


def _read_through(proxy: Any, s3_server: S3Server, rel: str, **extra: str) -> Any:
    """A fresh lake reaching ``s3_server`` through ``proxy`` (no pooled connections yet)."""
    clear_fs_caches()
    lake, _ = open_test_lake(s3_server.env(rel, MAGSAG_STORAGE_S3_ENDPOINT_URL=proxy.endpoint, **extra))
    return lake


def test_a_terminal_failure_is_not_retried(s3_server: S3Server, flaky_proxy) -> None:
    url = s3_server.fresh_url()
    s3_server.fs().pipe_file(url.removeprefix("s3://") + "/blob", b"x" * 1000)
    proxy = flaky_proxy(s3_server.endpoint)
    lake = _read_through(proxy, s3_server, url)
    proxy.fail(1, "403")  # one AccessDenied; any retry would have succeeded
    with pytest.raises(ConfigError) as err:
        retry(lake, "reading blob", lake.fs.cat_file, lake.path("blob"))
    assert proxy.failed == 1 and "access denied" in _one_line(err.value, s3_server.secret)
    assert retry(lake, "reading blob", lake.fs.cat_file, lake.path("blob")) == b"x" * 1000


def test_a_body_cut_off_mid_read_is_retried_by_the_operation(s3_server: S3Server, flaky_proxy, caplog) -> None:
    url = s3_server.fresh_url()
    blob = os.urandom(1 << 20)
    s3_server.fs().pipe_file(url.removeprefix("s3://") + "/blob", blob)
    proxy = flaky_proxy(s3_server.endpoint)
    lake = _read_through(proxy, s3_server, url)
    proxy.fail(1, "cut")  # botocore has returned the response; its body breaks off while s3fs reads it
    with caplog.at_level(logging.INFO, logger="magsag.lakehouse.objstore"):
        assert retry(lake, "reading blob", lake.fs.cat_file, lake.path("blob")) == blob
    assert proxy.failed == 1 and any("(try 1); retrying" in r.getMessage() for r in caplog.records)

    lake = _read_through(proxy, s3_server, url, MAGSAG_STORAGE_S3_RETRIES="0")
    proxy.fail(1, "cut")
    with pytest.raises(BackendUnavailable) as err:
        retry(lake, "reading blob", lake.fs.cat_file, lake.path("blob"))
    assert "reading blob kept failing" in _one_line(err.value, s3_server.secret)


def test_botocore_retries_each_request_and_the_error_counts_its_tries(s3_server: S3Server, flaky_proxy) -> None:
    url = s3_server.fresh_url()
    s3_server.fs().pipe_file(url.removeprefix("s3://") + "/blob", b"y" * 10)
    proxy = flaky_proxy(s3_server.endpoint)
    lake = _read_through(proxy, s3_server, url, MAGSAG_STORAGE_S3_RETRIES="2")
    proxy.fail(2, "503")  # two throttled answers, then the real one: botocore's third try
    assert retry(lake, "reading blob", lake.fs.cat_file, lake.path("blob")) == b"y" * 10
    assert proxy.failed == 2
    lake = _read_through(proxy, s3_server, url, MAGSAG_STORAGE_S3_RETRIES="2")  # no kept-alive connection
    proxy.fail(3, "503")  # as many as the tries: the operation policy does not try again
    with pytest.raises(BackendUnavailable) as err:
        retry(lake, "reading blob", lake.fs.cat_file, lake.path("blob"))
    assert proxy.failed == 5 and "reading blob kept failing after 3 attempts" in _one_line(err.value)
