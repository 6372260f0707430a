"""The embedder, the embed job and the CLI (SQLite store, real wordllama, a lake on disk)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from magsag.backends.embedding import EmbedderInfo, EmbeddingMismatch, event_text, load_embedder

from tests.cli_helpers import magsag
from tests.semantic.test_relevance import NOW, T0, corpus_events, family_of


def test_default_embedder_is_offline_normalised_256() -> None:
    emb = load_embedder("wordllama")
    vecs = emb.embed(["could not connect to the DB", "database connection refused", "all tests passed"])
    assert emb.info == EmbedderInfo("wordllama/l2_supercat_256", 256) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]


def test_event_text_says_type_message_and_salient_fields() -> None:
    text = event_text("mcp.call", "tool failed", {"tool": "web_search", "error": "HTTP 429", "tokens": 12, "x": "y"})
    assert text == "mcp.call: tool failed | tool: web_search | error: HTTP 429"
    assert event_text("log", None, "{}") == "log:"


def test_plugged_embedder_by_dotted_path_and_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    emb = load_embedder("tests.semantic.plugin_embedder:trigram_embed")
    assert emb.dim == 32 and emb.model == "tests.semantic.plugin_embedder:trigram_embed"
    assert np.allclose(np.linalg.norm(emb.embed(["a b c"]), axis=1), 1.0)
    with pytest.raises(EmbeddingMismatch, match=r"dim 256.*dim 32"):
        emb.info.check(EmbedderInfo("wordllama/l2_supercat_256", 256), "the store")


def _store(tmp_path: Path) -> dict[str, str]:
    import asyncio

    from magsag.storage import open_storage

    async def fill() -> None:
        async with open_storage(backend="sqlite", db_path=tmp_path / "s.db") as st:
            await st.append_events(corpus_events())
            for run_id in sorted({e["run_id"] for e in corpus_events()}):
                await st.update_run(run_id, status="failed", ended_at=T0 + timedelta(hours=5))

    asyncio.run(fill())
    return {"MAGSAG_STORAGE_DB_PATH": str(tmp_path / "s.db"), "MAGSAG_NOW": NOW}


def test_cli_embed_search_modes_and_errors(tmp_path: Path) -> None:
    env = _store(tmp_path)
    r = magsag("data", "search", "could not connect to the DB", "--semantic", env=env)
    assert r.code == 1 and "magsag data embed" in r.err  # nothing embedded yet: says what to do
    r = magsag("data", "embed", "--batch", "50", "--json", env=env)
    assert r.code == 0 and r.json()["embedded"] == 200 and r.json()["backlog"] == 0
    assert magsag("data", "embed", "--json", env=env).json()["embedded"] == 0  # resumable: nothing twice
    r = magsag("data", "search", "could not connect to the DB", "--semantic", "--limit", "5", "--json", env=env)
    hits = r.json()
    assert r.code == 0 and len(hits) == 5 and all(family_of()[h["msg"]] == "connection" for h in hits)
    assert hits == sorted(hits, key=lambda h: -h["score"])
    r = magsag("data", "search", "--like", hits[0]["event_id"], "--limit", "3", "--json", env=env)
    assert r.code == 0 and hits[0]["event_id"] not in {h["event_id"] for h in r.json()}
    r = magsag("data", "search", "--runs-like", "run-timeout-0", "--limit", "2", "--json", env=env)
    assert r.code == 0 and {x["run_id"] for x in r.json()} <= {"run-timeout-1", "run-timeout-2", "run-timeout-3"}
    r = magsag("data", "search", "rate limit", "--hybrid", "--limit", "5", "--json", env=env)
    fused = r.json()
    assert r.code == 0 and fused[0]["text_rank"] is not None and fused[0]["vector_rank"] is not None
    assert magsag("data", "search", "rate limit", "--semantic", env=env).code == 0  # table output
    # bad input: one line, exit 2
    for args in (["--semantic"], ["x", "--like", "e1"], ["x", "--semantic", "--hybrid"], ["x", "--type", "log"]):
        r = magsag("data", "search", *args, env=env)
        assert r.code == 2 and r.err.startswith("error:") and "Traceback" not in r.err, (args, r.err)
    r = magsag("data", "search", "--like", "no-such-event", env=env)
    assert r.code == 1 and "no event" in r.err
    # another embedder against stored wordllama vectors: a clear error, nothing mixed
    r = magsag("data", "embed", "--embedder", "tests.semantic.plugin_embedder:trigram_embed", env=env)
    assert r.code == 2 and "holds vectors of model 'wordllama/l2_supercat_256'" in r.err and "--reset" in r.err
    r = magsag(
        "data", "embed", "--embedder", "tests.semantic.plugin_embedder:trigram_embed", "--reset", "--json", env=env
    )
    assert r.code == 0 and r.json()["dim"] == 32 and r.json()["embedded"] == 200


def test_tiering_writes_vectors_and_embeds_late_events(tmp_path: Path) -> None:
    env = _store(tmp_path)
    env["MAGSAG_STORAGE_LAKE_URL"] = str(tmp_path / "lake")
    assert magsag("data", "embed", env=env).code == 0
    # a late event, never embedded in the hot store: tiering embeds it on the way
    import asyncio

    from magsag.storage import open_storage

    async def late() -> None:
        async with open_storage(backend="sqlite", db_path=tmp_path / "s.db") as st:
            await st.append_event(
                "run-late", "agent-a", "log", T0 + timedelta(hours=3), "error", "ENOSPC: disk is full"
            )
            await st.update_run("run-late", status="failed", ended_at=T0 + timedelta(hours=4))

    asyncio.run(late())
    assert magsag("data", "tier", "--hot-days", "2", env=env).code == 0
    files = sorted((tmp_path / "lake" / "events").glob("dt=*/*.parquet"))
    assert files
    schema = pq.read_schema(files[0])
    assert schema.field("embedding").type.list_size == 256 and b"magsag.embedding" in schema.metadata
    table = pq.read_table(files[0])
    assert table.column("embedding").null_count == 0 and table.num_rows == 201
    r = magsag("data", "search", "the disk is full", "--semantic", "--limit", "3", "--json", env=env)
    assert r.code == 0 and all(h["tier"] == "lake" for h in r.json())
    r = magsag("data", "search", "the disk is full", "--semantic", "--run", "run-late", "--json", env=env)
    assert r.code == 0 and [(h["msg"], h["tier"]) for h in r.json()] == [("ENOSPC: disk is full", "lake")]

    from magsag.lakehouse.compact import merged_embedding

    assert merged_embedding([str(f) for f in files]) == ("wordllama/l2_supercat_256", 256)


def test_compaction_merges_files_with_vectors(tmp_path: Path) -> None:
    import asyncio

    from magsag.lakehouse import layout
    from magsag.lakehouse.compact import compact_partition
    from magsag.lakehouse.lakewriter import PartitionWriter, publish
    from magsag.lakehouse.objstore import open_lake
    from magsag.lakehouse.tiering.embed import EventVectors

    from tests.lake.data import busiest_day, demo, sorted_table

    lake = open_lake(str(tmp_path / "lake"))
    events, _ = demo(days=1, runs_per_day=4)
    day, rows = busiest_day(events)
    vectors = EventVectors(load_embedder(), None)
    half = len(rows) // 2
    for job, part in (("j1", rows[:half]), ("j2", rows[half:])):
        table = asyncio.run(vectors.attach(sorted_table(layout.EVENTS, part)))
        with PartitionWriter(lake, layout.EVENTS, day, job, embedding=vectors.spec) as w:
            w.write(table)
            publish(lake, w.finish())
    report = compact_partition(lake, layout.EVENTS, day, target_rows=10_000_000)
    assert report["status"] == "compacted" and report["files_before"] == 2
    merged = pq.read_table(lake.path(report["path"]))
    assert merged.num_rows == len(rows) and merged.column("embedding").null_count == 0
    assert merged.schema.field("embedding").type.list_size == 256


def test_embed_every_follows_new_events_and_stops_on_sigterm(tmp_path: Path) -> None:
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import time

    from magsag.backends.vectors import vector_store

    from magsag.storage import open_storage

    env = {**os.environ, **_store(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "magsag", "data", "embed", "--every", "1s", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        async def backlog_after_more() -> int:
            async with open_storage(backend="sqlite", db_path=tmp_path / "s.db") as st:
                await st.append_event("run-new", "agent-a", "log", T0 + timedelta(hours=6), "error", "quota exceeded")
                store = vector_store(st)
                deadline = time.monotonic() + 120
                while await store.backlog() and time.monotonic() < deadline:
                    await asyncio.sleep(0.3)
                return await store.backlog()

        assert asyncio.run(backlog_after_more()) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped" in err and '"backlog"' in out
