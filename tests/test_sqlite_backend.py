"""SQLite specifics: crash journal, FTS detection and fallback, schema versioning, on-disk layout."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from magsag.backends.errors import BackendUnavailable, ConfigError
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS, event_arrow_schema, run_arrow_schema
from magsag.backends.sqlite.schema import SQLITE_SCHEMA_VERSION
from magsag.backends.sqlite.store import SQLiteStorageBackend

NOW = datetime(2025, 10, 23, 8, tzinfo=UTC)


def _columns(db: Path, table: str) -> list[str]:
    with sqlite3.connect(db) as c:
        return [r[1] for r in c.execute(f"PRAGMA table_info({table})")]


async def test_schema_matches_canonical_definition(sqlite_path: Path) -> None:
    async with SQLiteStorageBackend(sqlite_path):
        pass
    assert _columns(sqlite_path, "events") == ["seq", *EVENT_COLUMNS]
    assert _columns(sqlite_path, "runs") == list(RUN_COLUMNS)
    assert event_arrow_schema().names == list(EVENT_COLUMNS)
    assert run_arrow_schema().names == list(RUN_COLUMNS)
    with sqlite3.connect(sqlite_path) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA user_version").fetchone()[0] == SQLITE_SCHEMA_VERSION
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"events_run_ts", "events_agent_ts", "events_type_ts", "events_span", "runs_agent_started"} <= indexes


async def test_init_is_idempotent_and_keeps_data(sqlite_path: Path) -> None:
    async with SQLiteStorageBackend(sqlite_path) as s:
        await s.append_event("r", "a", "log", NOW, message="kept")
    for _ in range(2):
        async with SQLiteStorageBackend(sqlite_path) as s:
            assert [e["msg"] async for e in s.get_events("r")] == ["kept"]


async def test_newer_schema_is_refused(sqlite_path: Path) -> None:
    async with SQLiteStorageBackend(sqlite_path):
        pass
    with sqlite3.connect(sqlite_path) as c:
        c.execute(f"PRAGMA user_version = {SQLITE_SCHEMA_VERSION + 5}")
    with pytest.raises(ConfigError, match="newer"):
        async with SQLiteStorageBackend(sqlite_path):
            pass


async def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not sqlite " * 500)
    with pytest.raises(BackendUnavailable, match=r"notes\.txt"):
        async with SQLiteStorageBackend(bogus):
            pass
    assert bogus.read_text().startswith("this is not sqlite")  # untouched
    with pytest.raises(BackendUnavailable, match="directory"):
        async with SQLiteStorageBackend(tmp_path):
            pass


async def test_fts_can_be_disabled_and_search_still_works(sqlite_path: Path) -> None:
    async with SQLiteStorageBackend(sqlite_path, enable_fts=False) as s:
        assert s.enable_fts is False
        await s.append_event("r", "a", "log", NOW, message="Rate limit exceeded 100%_done")
        assert [h["msg"] for h in await s.search_text("rate LIMIT")] == ["Rate limit exceeded 100%_done"]
        assert await s.search_text("100%") != []
        assert await s.search_text("zzz") == []
    with sqlite3.connect(sqlite_path) as c:
        assert c.execute("SELECT count(*) FROM sqlite_master WHERE name = 'events_fts'").fetchone()[0] == 0
    async with SQLiteStorageBackend(sqlite_path, enable_fts=True) as s:  # re-enabling rebuilds the index
        assert s.enable_fts is True
        assert [h["msg"] for h in await s.search_text("exceeded")] == ["Rate limit exceeded 100%_done"]


async def test_fts_index_follows_deletes(sqlite_path: Path) -> None:
    async with SQLiteStorageBackend(sqlite_path) as s:
        await s.create_run("old", "a", started_at=NOW, status="succeeded")
        await s.update_run("old", status="succeeded", ended_at=NOW)
        await s.append_event("old", "a", "log", NOW, message="findme")
        await s.vacuum(hot_days=0, now=datetime(2025, 12, 1, tzinfo=UTC))
        assert await s.search_text("findme") == []
    with sqlite3.connect(sqlite_path) as c:
        c.execute("INSERT INTO events_fts(events_fts) VALUES ('integrity-check')")


def test_single_appends_survive_a_crash(sqlite_path: Path) -> None:
    """append_event returns once the event is durable: a hard crash right after loses nothing."""
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from datetime import datetime, timezone
        from magsag.backends.sqlite.store import SQLiteStorageBackend

        async def main():
            s = SQLiteStorageBackend({str(sqlite_path)!r})
            await s.initialize()
            t = datetime(2025, 10, 23, tzinfo=timezone.utc)
            for i in range(500):
                await s.append_event("crash-run", "a", "log", t, message=f"e{{i}}")
            os._exit(9)  # no close(), no flush: like kill -9 right after the last call returned

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr

    import asyncio

    async def check() -> list[str]:
        async with SQLiteStorageBackend(sqlite_path) as s:
            return [e["msg"] async for e in s.get_events("crash-run")]

    assert asyncio.run(check()) == [f"e{i}" for i in range(500)]
    journal_dir = sqlite_path.with_name(sqlite_path.name + ".magsag-journal")
    assert not list(journal_dir.glob("*.jsonl"))  # replayed and removed


async def test_writes_after_single_appends_see_them(sqlite_path: Path) -> None:
    """Journaled single appends reach SQLite before any later write of the same task:
    16 agents log their run's first events, close the run at once (the run the appends
    created exists for the update) and reload the same events (nothing is new)."""

    def ts(i: int) -> datetime:
        return NOW + timedelta(seconds=i)

    async def agent(s: SQLiteStorageBackend, k: int) -> list[str]:
        ids = [await s.append_event(f"seq-{k}", "agent", "log", ts(i), message=f"a{k} {i}") for i in range(30)]
        run = await s.update_run(f"seq-{k}", status="succeeded", metrics={"n": 30})
        assert run["status"] == "succeeded"
        again = [
            {"event_id": ids[i], "run_id": f"seq-{k}", "agent_slug": "agent", "type": "log", "ts": ts(i)}
            for i in range(30)
        ]
        assert await s.append_events(again) == 0
        return ids

    async with SQLiteStorageBackend(sqlite_path) as s:
        all_ids = await asyncio.gather(*(agent(s, k) for k in range(16)))
        for k, ids in enumerate(all_ids):
            got = [e async for e in s.get_events(f"seq-{k}")]
            assert [e["event_id"] for e in got] == ids
            assert [e["msg"] for e in got] == [f"a{k} {i}" for i in range(30)]
            run = await s.get_run(f"seq-{k}")
            assert run is not None and run["status"] == "succeeded" and run["metrics"] == {"n": 30}


async def test_large_batches_store_every_event_once(sqlite_path: Path) -> None:
    """Batches are written in several statements: sizes that are not a multiple of any
    of them, duplicates inside a batch and events already stored all count right."""

    def event(i: int) -> dict[str, object]:
        return {
            "event_id": f"00000000-0000-7000-8000-{i:012d}",
            "run_id": f"big-{i % 7}",
            "agent_slug": "loader",
            "type": "log",
            "ts": NOW + timedelta(milliseconds=i),
            "msg": f"line {i}",
            "payload": {"i": i},
        }

    async with SQLiteStorageBackend(sqlite_path) as s:
        assert await s.append_events([event(i) for i in range(0, 3000, 2)]) == 1500
        mixed = [event(i) for i in range(3000)] + [event(2999), event(1)]
        assert await s.append_events(mixed) == 1500
        got = [e async for e in s.get_events("big-3")]
        assert [e["payload"]["i"] for e in got] == list(range(3, 3000, 7))
        assert (await s.stats())["events"] == 3000
        assert len(await s.search_text("line", limit=10_000)) == 3000
        assert len(await s.list_runs(limit=100)) == 7


async def test_another_process_writing_does_not_lock_us_out(sqlite_path: Path) -> None:
    async with SQLiteStorageBackend(sqlite_path) as s:
        other = sqlite3.connect(sqlite_path, timeout=30)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO magsag_meta(key, value) VALUES ('x', 'y')")
        import asyncio

        batch = [{"run_id": "r", "agent_slug": "a", "type": "log", "ts": NOW, "msg": f"m{i}"} for i in range(2)]
        task = asyncio.create_task(s.append_events(batch))
        await asyncio.sleep(0.3)
        try:
            assert not task.done()  # waits for the other writer (busy timeout), does not fail
        finally:
            other.execute("COMMIT")
            other.close()
        assert await task == 2
