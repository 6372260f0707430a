"""SQLite word search: the unfiltered fast path (rank in FTS5, then join the page) ranks like the full query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from magsag.backends.sqlite.store import SQLiteStorageBackend


async def test_fast_path_ranks_like_the_filtered_query(sqlite_path: Path) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    msgs = ["rate limit hit", "rate limit exceeded again and again", "timeout", "rate limit", "limit of rate"]
    events = [
        {"run_id": f"r{i % 7}", "agent_slug": "a", "event_type": "log", "timestamp": t0 + timedelta(seconds=i),
         "message": msgs[i % len(msgs)]}
        for i in range(500)
    ]  # fmt: skip
    async with SQLiteStorageBackend(sqlite_path) as st:
        await st.append_events(events)
        for limit in (1, 7, 50, 100, 1000):
            fast = await st.search_text("rate limit", limit=limit)
            full = await st.search_text("rate limit", limit=limit, since=t0 - timedelta(days=1))  # filtered path
            assert [h["event_id"] for h in fast] == [h["event_id"] for h in full], limit
            assert [h["score"] for h in fast] == sorted((h["score"] for h in fast), reverse=True)
