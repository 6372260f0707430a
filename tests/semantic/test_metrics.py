"""/metrics reports the embed backlog once the store holds vectors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from magsag.backends.embedding import load_embedder
from magsag.backends.vectors import embed_pending


async def test_embed_backlog_gauge(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from magsag.serve.metrics import _embed_gauges
    from magsag.storage import open_storage

    def samples(fams: list) -> dict[str, float]:
        return {s.name: s.value for f in fams for s in f.samples}

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    async with open_storage(backend="sqlite", db_path=tmp_path / "s.db") as st:
        await st.append_events(
            [{"run_id": "r", "agent_slug": "a", "type": "log", "ts": t0 + timedelta(seconds=i), "msg": f"m {i}"}
             for i in range(30)]
        )  # fmt: skip
        assert await _embed_gauges(st, ["sqlite"]) == []  # semantic search not switched on yet
        await embed_pending(st, load_embedder(), max_events=20, batch=10)
        got = samples(await _embed_gauges(st, ["sqlite"]))
        assert got == {"magsag_embed_backlog_events": 10, "magsag_embed_vectors": 20}
