"""DDL: what ClickHouse itself reports about the tables `magsag data clickhouse init` creates."""

from __future__ import annotations

import pytest
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS
from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.clickhouse.engines import Engine, SchemaMismatch
from magsag.lakehouse.clickhouse.schema import ensure_schema, init_schema


def _columns(engine: Engine, table: str) -> dict[str, tuple[str, str]]:
    rows = engine.rows(
        "SELECT name, type, compression_codec FROM system.columns WHERE database = {db:String} "
        "AND table = {t:String} ORDER BY position",
        {"db": engine.database, "t": table},
    )
    return {n: (t, c) for n, t, c in rows}


def _table(engine: Engine, table: str) -> dict[str, str]:
    rows = engine.rows(
        "SELECT engine, partition_key, sorting_key, primary_key FROM system.tables "
        "WHERE database = {db:String} AND name = {t:String}",
        {"db": engine.database, "t": table},
    )
    return dict(zip(("engine", "partition_key", "sorting_key", "primary_key"), rows[0], strict=True))


def test_init_creates_tables_matching_the_canonical_schema(engine: Engine) -> None:
    info = init_schema(engine)
    assert info["created"] == ["events", "runs", sql.LEDGER, sql.SCHEMA_TABLE]
    ev = _columns(engine, "events")
    assert list(ev) == [*EVENT_COLUMNS, "embedding"]  # + each event's vector (schema v2, docs/search.md)
    assert ev["embedding"] == ("Array(Float32)", "CODEC(ZSTD(1))")
    assert ev["ts"] == ("DateTime64(6, 'UTC')", "CODEC(Delta(8), ZSTD(1))")
    for name in ("agent_slug", "type"):
        assert ev[name][0] == "LowCardinality(String)"
    assert ev["level"][0] == "LowCardinality(Nullable(String))"
    assert ev["msg"] == ("Nullable(String)", "CODEC(ZSTD(3))")
    assert ev["payload"] == ("Nullable(String)", "CODEC(ZSTD(3))")
    assert ev["event_id"] == ("String", "CODEC(ZSTD(1))")
    runs = _columns(engine, "runs")
    assert list(runs) == list(RUN_COLUMNS)
    assert runs["status"][0] == "LowCardinality(String)"
    assert runs["started_at"] == ("DateTime64(6, 'UTC')", "CODEC(Delta(8), ZSTD(1))")
    assert runs["ended_at"][0] == "Nullable(DateTime64(6, 'UTC'))"
    assert runs["tags"][0] == "Array(String)"

    t = _table(engine, "events")
    assert t["engine"] == "ReplacingMergeTree"
    assert t["partition_key"] == "toDate(ts)"
    assert t["sorting_key"] == "agent_slug, run_id, ts, event_id"
    assert t["primary_key"] == "agent_slug, run_id, ts"
    r = _table(engine, "runs")
    assert (r["engine"], r["partition_key"]) == ("ReplacingMergeTree", "toDate(started_at)")
    assert r["sorting_key"].startswith("agent_slug, started_at")

    idx = engine.rows(
        "SELECT table, name, type, expr FROM system.data_skipping_indices WHERE database = {db:String} "
        "ORDER BY table, name",
        {"db": engine.database},
    )
    assert ("events", "msg_tokens", "tokenbf_v1", "lowerUTF8(ifNull(msg, ''))") in idx
    assert ("events", "run_id_bloom", "bloom_filter", "run_id") in idx


def test_token_index_serves_the_search_predicate(chdb: Engine) -> None:
    init_schema(chdb)
    chdb.command(
        f"INSERT INTO {sql.table(chdb.database, 'events')} (event_id, ts, run_id, agent_slug, type, msg) "
        "SELECT toString(number), now64(6, 'UTC'), 'r', 'a', 'log', if(number % 2, 'rate limit', 'ok') "
        "FROM numbers(20000)"
    )
    plan = chdb.rows(
        f"EXPLAIN indexes = 1 SELECT count() FROM {sql.table(chdb.database, 'events')} WHERE {sql.word_condition(0)}",
        {"w0": "error"},
    )
    text = "\n".join(r[0] for r in plan)
    assert "msg_tokens" in text


def test_init_is_idempotent_and_records_the_version(engine: Engine) -> None:
    init_schema(engine)
    again = init_schema(engine)
    assert again["created"] == []
    assert engine.value(sql.schema_version(engine.database)) == sql.SCHEMA_VERSION
    ensure_schema(engine)  # checks pass on what init created


def test_ttl_from_settings_is_applied_and_removed(engine: Engine) -> None:
    init_schema(engine, ttl_days=30)
    create = engine.value(sql.show_create(engine.database, "events"))
    assert "TTL toDateTime(ts) + toIntervalDay(30)" in create
    init_schema(engine, ttl_days=90)
    assert "toIntervalDay(90)" in engine.value(sql.show_create(engine.database, "runs"))
    init_schema(engine, ttl_days=None)
    assert "TTL" not in engine.value(sql.show_create(engine.database, "events"))


@pytest.mark.parametrize(
    ("alter", "needle"),
    [
        ("ALTER TABLE {t} MODIFY COLUMN type String", "column type is String, expected LowCardinality"),
        ("ALTER TABLE {t} DROP COLUMN artifact_uri", "has no column artifact_uri"),
        ("ALTER TABLE {t} ADD COLUMN extra String", "does not know: extra"),
    ],
)
def test_schema_mismatch_is_one_clear_error(engine: Engine, alter: str, needle: str) -> None:
    init_schema(engine)
    engine.command(alter.format(t=sql.table(engine.database, "events")))
    with pytest.raises(SchemaMismatch, match=needle) as err:
        init_schema(engine)
    assert "\n" not in str(err.value) and "MAGSAG_CLICKHOUSE_DATABASE" in str(err.value)
    with pytest.raises(SchemaMismatch, match=needle):
        ensure_schema(engine)


def test_foreign_table_with_the_same_name_is_refused(engine: Engine) -> None:
    engine.command(sql.create_database(engine.database))
    engine.command(
        f"CREATE TABLE {sql.table(engine.database, 'runs')} (run_id String) ENGINE = MergeTree ORDER BY run_id"
    )
    with pytest.raises(SchemaMismatch, match="is a MergeTree, expected ReplacingMergeTree"):
        init_schema(engine)


def test_newer_schema_version_is_refused(engine: Engine) -> None:
    init_schema(engine)
    engine.command(sql.record_schema_version(engine.database), {"version": sql.SCHEMA_VERSION + 1})
    with pytest.raises(SchemaMismatch, match="newer than"):
        init_schema(engine)


def test_ddl_follows_the_canonical_arrow_schema() -> None:
    # a column added to backends/schema.py appears in the DDL and the load structure
    for dataset, names in (("events", EVENT_COLUMNS), ("runs", RUN_COLUMNS)):
        assert sql.column_names(dataset) == list(names)
        ddl = sql.create_table("db", dataset)
        assert all(f"`{n}`" in ddl for n in names)
        assert sql.structure(dataset).split(", ")[0].split()[0] == names[0]
