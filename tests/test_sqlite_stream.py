"""SQLite stream_events across processes, and after tiering deletes (backends/sqlite/stream.py)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from magsag.backends.sqlite.store import SQLiteStorageBackend

from tests.contract.test_stream import GUARD_S, take

T0 = datetime(2025, 10, 23, 8, tzinfo=UTC)

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import datetime, timezone
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    async def main():
        async with SQLiteStorageBackend(db_path=sys.argv[1]) as b:
            for i in range(3):
                await b.append_event("other", "proc", "log", datetime(2025, 10, 23, 9, tzinfo=timezone.utc),
                                     message=f"from another process {i}")

    asyncio.run(main())
    """
)


async def test_another_process_is_seen_by_polling(tmp_path: Path) -> None:
    db = tmp_path / "hot.db"
    async with SQLiteStorageBackend(db_path=db) as backend:
        backend.stream_poll_s = 0.05
        stream = backend.stream_events(since=T0)
        got = asyncio.ensure_future(take(stream, 4))
        await backend.append_event("mine", "a", "log", T0, message="this process")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, str(db))
        assert await asyncio.wait_for(proc.wait(), GUARD_S) == 0
        msgs = [e["msg"] for e in await got]
    assert msgs == ["this process", *(f"from another process {i}" for i in range(3))]


async def test_cursor_survives_deletes(tmp_path: Path) -> None:
    async with SQLiteStorageBackend(db_path=tmp_path / "hot.db") as backend:
        await backend.append_events(
            [
                {"run_id": "r", "agent_slug": "a", "type": "log", "ts": T0 + timedelta(seconds=i), "msg": f"m{i}"}
                for i in range(4)
            ]
        )
        first = await take(backend.stream_events(since=T0), 2)
        await backend.write(lambda c: c.execute("DELETE FROM events WHERE msg IN ('m1', 'm2')"))
        stream = backend.stream_events(cursor=first[-1]["cursor"])
        got = asyncio.ensure_future(take(stream, 2))
        await backend.append_event("r", "a", "log", T0, message="new")
        assert [e["msg"] for e in await got] == ["m3", "new"]
