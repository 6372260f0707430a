"""ClickHouse loads keep each event's vector (``embedding Array(Float32)``), on both load paths."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from magsag.backends.embedding import load_embedder
from magsag.lakehouse import layout
from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.clickhouse.load import load_lake
from magsag.lakehouse.lakewriter import PartitionWriter, publish
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.tiering.embed import EventVectors

from tests.lake.data import by_day, demo, sorted_table

pytestmark = pytest.mark.clickhouse


def test_loads_keep_vectors_and_cosine_distance_ranks(tmp_path: Path) -> None:
    pytest.importorskip("chdb")
    from tests.clickhouse_helpers import fresh_engine

    lake = open_lake(str(tmp_path / "lake"))
    events, _ = demo(days=2, runs_per_day=3)
    vectors = EventVectors(load_embedder(), None)
    days = list(by_day(events, 1).items())
    for i, (day, rows) in enumerate(days):
        table = sorted_table(layout.EVENTS, rows)
        if i == 0:  # the first day with vectors, the second day as files written before semantic search
            table = asyncio.run(vectors.attach(table))
        with PartitionWriter(lake, layout.EVENTS, day, "j", embedding=vectors.spec if i == 0 else None) as w:
            w.write(table)
            publish(lake, w.finish())
    with_vec = len(days[0][1])
    emb = load_embedder()
    q = emb.embed(["the tool call timed out"])[0]
    lit = "[" + ", ".join(f"{float(x):.8g}" for x in q) + "]"
    results = []
    with fresh_engine("chdb") as server, fresh_engine("chdb") as client:
        load_lake(server, lake)
        load_lake(client, lake, client_side=True)
        for engine in (server, client):
            t = sql.table(engine.database, "events")
            lengths = dict(engine.rows(f"SELECT length(embedding), count() FROM {t} GROUP BY 1"))
            assert lengths == {256: with_vec, 0: len(events) - with_vec}
            results.append(
                engine.rows(
                    f"SELECT event_id, round(1 - cosineDistance(embedding, {lit}), 4) AS s FROM {t} "
                    "WHERE length(embedding) > 0 ORDER BY s DESC, event_id LIMIT 5"
                )
            )
    assert results[0] == results[1] and len(results[0]) == 5


def test_v1_tables_gain_the_embedding_column(tmp_path: Path) -> None:
    pytest.importorskip("chdb")
    from magsag.lakehouse.clickhouse.schema import init_schema

    from tests.clickhouse_helpers import fresh_engine

    with fresh_engine("chdb") as engine:
        init_schema(engine)
        t = sql.table(engine.database, "events")
        engine.command(f"ALTER TABLE {t} DROP COLUMN embedding")  # what a v1 table looks like
        engine.command(sql.record_schema_version(engine.database), {"version": 1})
        assert "embedding" not in dict(engine.rows(sql.table_columns(engine.database, "events")))
        info = init_schema(engine)
        assert info["created"] == [] and info["schema_version"] == 2
        assert dict(engine.rows(sql.table_columns(engine.database, "events")))["embedding"] == "Array(Float32)"
