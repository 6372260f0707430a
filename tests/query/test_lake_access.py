"""How readers find the lake's files: manifest, compaction, leftovers, plain globs, S3,
other fsspec stores, no lake at all; credentials never shown."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.schema import Event, Run, to_us
from magsag.lakehouse import layout, manifest, query
from magsag.lakehouse.lakefiles import SnapshotReader
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.settings import load_settings
from magsag.lakehouse.tiered_backend import TieredBackend

from tests.cli_helpers import magsag
from tests.lake_builder import write_lake, write_table

T0 = datetime(2026, 4, 1, 10, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def _events(n: int = 12, run: str = "run-a") -> list[Event]:
    return [Event.create(run, "agent", "log", T0 + timedelta(hours=i * 6), message=f"step {i}") for i in range(n)]


def _count(settings: Any, sql: str = "SELECT count(*) AS n FROM events") -> int:
    return query.run_sql(sql, settings).to_pylist()[0]["n"]


def test_compacted_and_uncommitted_files_are_not_read(tmp_path: Path) -> None:
    from magsag.backends.arrow import events_table

    lake = open_lake(str(tmp_path / "lake"))
    events = _events()
    write_lake(lake, events, files_per_day=2)
    settings = load_settings(db_path=tmp_path / "none.db", lake_url=str(tmp_path / "lake"))
    assert _count(settings) == 12
    # A compaction: one merged file whose entry replaces the day's two files (old files still there).
    day = date(2026, 4, 1)
    old = [e.path for e in manifest.live_entries(lake, "events", day)]
    assert len(old) == 2
    rows = [e.row() for e in events if e.ts_us < to_us(datetime(2026, 4, 2, tzinfo=UTC))]
    merged = write_table(lake, "events", day, events_table(rows), "compact-x")
    entry = manifest.ManifestEntry(**{**merged.__dict__, "replaces": tuple(old)})
    manifest.write_entry(lake, entry)
    # A crashed job's leftover: a data file without a manifest entry.
    leftover = lake.path(layout.data_path("events", day, "crashed", 0))
    Path(leftover).write_bytes(Path(lake.path(old[0])).read_bytes())
    snap = SnapshotReader(lake).snapshot()
    assert snap.from_manifest and {f.rel for f in snap.of("events", day, day)} == {merged.path}
    assert _count(settings) == 12  # not 12 + 4 (replaced) + 2 (leftover)
    assert _count(settings, "SELECT count(DISTINCT event_id) AS n FROM lake_events") == 12


def test_lake_without_manifest_is_read_with_the_glob(tmp_path: Path) -> None:
    lake = open_lake(str(tmp_path / "lake"))
    write_lake(lake, _events(), [Run("run-a", "agent", None, "succeeded", to_us(T0), None, "{}", ())])
    for p in Path(lake.path(layout.META_DIR)).rglob("*.json"):
        p.unlink()
    settings = load_settings(db_path=tmp_path / "none.db", lake_url=str(tmp_path / "lake"))
    snap = SnapshotReader(lake).snapshot()
    assert not snap.from_manifest and len(snap.of("events")) == 4
    assert _count(settings) == 12 and _count(settings, "SELECT count(*) AS n FROM runs") == 1


def test_no_lake_and_no_hot_store(tmp_path: Path) -> None:
    settings = load_settings(db_path=tmp_path / "none.db", lake_url=str(tmp_path / "nowhere"))
    assert _count(settings) == 0
    assert not (tmp_path / "none.db").exists()  # querying never creates a hot store


def test_other_fsspec_store(tmp_path: Path) -> None:
    """A non-S3 fsspec URL is registered with DuckDB as a filesystem."""
    url = f"memory://magsag-test-{tmp_path.name}"
    lake = open_lake(url)
    write_lake(lake, _events())
    settings = load_settings(db_path=tmp_path / "none.db", lake_url=url)
    con = query.connect(settings)
    try:
        assert con.sql("SELECT count(*) FROM events WHERE dt = DATE '2026-04-02'").fetchone()[0] == 4
    finally:
        query.close(con)
    lake.fs.rm(lake.root, recursive=True)


def test_s3_lake_and_secrets_stay_secret(lake_case: Any, tmp_path: Path) -> None:
    write_lake(lake_case.lake, _events())
    env = {**lake_case.env, "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "none.db")}
    res = magsag("data", "sql", "SELECT tier, count(*) AS n FROM events GROUP BY 1", "--format", "json", env=env)
    assert res.code == 0, res.err
    assert res.json() == [{"tier": "lake", "n": 12}]
    outputs = [res.out + res.err]
    for sql in ("SELECT * FROM duckdb_secrets()", "SELECT * FROM which_secret('s3://x', 's3')", "SELECT * FROM nope"):
        bad = magsag("data", "sql", sql, env=env)
        assert bad.code == 2
        outputs.append(bad.out + bad.err)
    stats = magsag("data", "stats", "--json", env=env)
    assert stats.code == 0 and stats.json()["lake"]["datasets"]["events"]["rows"] == 12
    outputs.append(stats.out + stats.err)
    if lake_case.kind == "s3":
        secret = lake_case.server.secret
        assert all(secret not in text for text in outputs)


def test_pure_hot_reads_start_no_duckdb(tmp_path: Path) -> None:
    """With no lake, the API is the hot store's own: DuckDB is not even imported."""
    code = f"""
import asyncio, sys, json
from magsag.backends.schema import utc_now
from magsag.storage import get_storage_backend

async def main():
    s = await get_storage_backend(db_path={str(tmp_path / "hot.db")!r}, lake_url={str(tmp_path / "lake")!r})
    await s.append_event("r", "a", "log", utc_now(), message="hello world")
    assert await s.get_run("r") is not None
    assert [e async for e in s.get_events("r")]
    assert await s.list_runs() and await s.search_text("hello")
    await s.query_metrics("x")
    await s.close()

asyncio.run(main())
print(json.dumps({{"duckdb": "duckdb" in sys.modules, "pandas": "pandas" in sys.modules}}))
"""
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)}, check=False
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"duckdb": False, "pandas": False}


async def test_tiered_update_of_a_lake_run_says_so(tmp_path: Path) -> None:
    from magsag.backends.errors import NotFoundError
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    write_lake(str(tmp_path / "lake"), _events(), [Run("run-a", "agent", None, "succeeded", to_us(T0), None, "{}", ())])
    storage = TieredBackend(SQLiteStorageBackend(tmp_path / "hot.db"), lake_url=str(tmp_path / "lake"))
    await storage.initialize()
    try:
        assert (await storage.get_run("run-a"))["status"] == "succeeded"  # type: ignore[index]
        with pytest.raises(NotFoundError, match="in the lake"):
            await storage.update_run("run-a", status="failed")
        with pytest.raises(NotFoundError, match="not found"):
            await storage.update_run("run-zzz", status="failed")
        assert await storage.locate_run("run-a") == {"run": "lake", "events": {"hot": 0, "lake": 12}}
        assert storage.hot.name == "sqlite" and storage.name == "sqlite"
        assert (await storage.stats())["events"] == 0  # hot-only extras reach the hot store
    finally:
        await storage.close()


def test_sync_storage_works_inside_a_running_loop(tmp_path: Path) -> None:
    import asyncio

    from magsag.lakehouse import open_storage_sync

    write_lake(str(tmp_path / "lake"), _events())

    async def inside() -> list[dict[str, Any]]:  # as in Jupyter: a loop is already running
        with open_storage_sync(db_path=tmp_path / "hot.db", lake_url=str(tmp_path / "lake")) as storage:
            return storage.get_events("run-a", limit=5)

    events = asyncio.run(inside())
    assert [e["msg"] for e in events] == [f"step {i}" for i in range(5)]
    assert {e["tier"] for e in events} == {"lake"}


def test_unreachable_or_forbidden_s3_is_one_line(s3_server: Any, tmp_path: Path) -> None:
    import socket

    url = s3_server.fresh_url()
    write_lake(open_lake(url, load_settings(**_kw(s3_server.env(url)))), _events())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    cases = {
        "forbidden": {**s3_server.env(url), "MAGSAG_STORAGE_S3_SECRET_ACCESS_KEY": "wrong-secret-value"},
        "unreachable": {**s3_server.env(url), "MAGSAG_STORAGE_S3_ENDPOINT_URL": f"http://127.0.0.1:{dead_port}"},
    }
    for name, env in cases.items():
        env = {**env, "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db")}
        for args in (
            ("data", "sql", "SELECT count(*) FROM events"),
            ("data", "search", "step"),
            ("data", "query", "--run-id", "run-a"),
            ("data", "stats"),
        ):
            res = magsag(*args, env=env)
            lines = [line for line in res.err.splitlines() if line.strip()]
            assert res.code != 0 and len(lines) == 1 and lines[0].startswith("error:"), (name, args, res.err)
            assert "Traceback" not in res.err and "wrong-secret-value" not in res.err + res.out
            assert s3_server.secret not in res.err + res.out


def _kw(env: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("MAGSAG_STORAGE_").lower(): v for k, v in env.items() if k.startswith("MAGSAG_STORAGE_")}


def test_connect_imports_no_pandas(tmp_path: Path) -> None:
    """Connection setup stays light: DuckDB and pyarrow, never pandas."""
    write_lake(str(tmp_path / "lake"), _events())
    code = f"""
import json, sys
from magsag import lakehouse
from magsag.lakehouse.settings import load_settings
settings = load_settings(db_path={str(tmp_path / "hot.db")!r}, lake_url={str(tmp_path / "lake")!r})
con = lakehouse.connect(settings)
n = con.sql("SELECT count(*) FROM events WHERE dt = DATE '2026-04-02'").fetchone()[0]
t = lakehouse.run_sql("SELECT * FROM events", settings)
print(json.dumps({{"n": n, "rows": t.num_rows, "pandas": "pandas" in sys.modules}}))
"""
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)}, check=False
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"n": 4, "rows": 12, "pandas": False}


def test_remembered_manifest_entries_are_revalidated(s3_server: Any) -> None:
    """Remote lakes remember manifest entries between processes, but never a changed object."""
    url = s3_server.fresh_url()
    lake = open_lake(url, load_settings(**_kw(s3_server.env(url))))
    write_lake(lake, _events())
    first = SnapshotReader(lake).snapshot()
    assert sum(f.rows or 0 for f in first.of("events")) == 12
    # Rewrite one entry in place (same path, different content): a fresh reader must see it.
    entry = manifest.live_entries(lake, "events")[0]
    changed = manifest.ManifestEntry(**{**entry.__dict__, "rows": entry.rows + 1000})
    lake.fs.pipe_file(lake.path(layout.manifest_path(entry.path)), changed.to_json())
    again = SnapshotReader(lake).snapshot()
    assert sum(f.rows or 0 for f in again.of("events")) == 12 + 1000
