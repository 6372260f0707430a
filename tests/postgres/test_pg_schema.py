"""Schema versioning and settings: init is idempotent, upgrades step by step, refuses newer."""

from __future__ import annotations

import asyncio

import pytest
from magsag.backends.errors import ConfigError
from magsag.backends.postgres import schema as postgres_schema
from magsag.backends.postgres.store import PostgresStorageBackend
from magsag.lakehouse.settings import backend_from_settings, load_settings

from tests.clock import PINNED_NOW

pytestmark = pytest.mark.postgres

NOW = PINNED_NOW


async def meta(admin, schema: str) -> dict[str, str]:
    return {r["key"]: r["value"] for r in await admin.fetch(f"SELECT key, value FROM {schema}.meta")}


async def test_init_records_version_and_is_idempotent(make_backend, admin) -> None:
    first = await make_backend("twice")
    await first.append_event("run-1", "planner", "log", NOW, message="kept")
    recorded = await meta(admin, first.schema)
    assert recorded["schema_version"] == str(postgres_schema.PG_SCHEMA_VERSION)
    assert recorded["partitioning"] == "native"
    assert recorded["fts_config"] == "simple"

    second = await make_backend("twice")
    await second.initialize()  # again on the same instance: a no-op
    assert await meta(admin, first.schema) == recorded
    assert [e["msg"] async for e in second.get_events("run-1")] == ["kept"]
    assert second.schema_version == postgres_schema.PG_SCHEMA_VERSION


async def test_concurrent_inits_of_a_new_schema(pg_dsn, pg_schemas, admin) -> None:
    schema = pg_schemas.sub("concurrent")
    backends = [PostgresStorageBackend(pg_dsn, schema=schema) for _ in range(3)]
    try:
        await asyncio.gather(*(b.initialize() for b in backends))
        assert (await meta(admin, schema))["schema_version"] == str(postgres_schema.PG_SCHEMA_VERSION)
    finally:
        for b in backends:
            await b.close()


async def test_an_older_schema_is_upgraded_in_place(make_backend, admin, monkeypatch) -> None:
    old = await make_backend("upgrade")
    await old.append_event("run-1", "planner", "log", NOW, message="from version 1")
    await old.close()

    step = postgres_schema.target_version() + 1

    def upgrade(schema: str, timescale: bool) -> list[str]:
        return [f"ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS note text"]

    monkeypatch.setitem(postgres_schema.STEPS, step, upgrade)
    new = await make_backend("upgrade")
    assert new.schema_version == step
    assert (await meta(admin, new.schema))["schema_version"] == str(step)
    columns = await admin.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'runs'",
        new.schema,
    )
    assert "note" in {r["column_name"] for r in columns}
    assert [e["msg"] async for e in new.get_events("run-1")] == ["from version 1"]
    again = await make_backend("upgrade")  # init on the upgraded schema: nothing to do
    assert again.schema_version == step


async def test_a_newer_schema_is_refused(make_backend, pg_dsn, admin) -> None:
    b = await make_backend("newer")
    await admin.execute(f"UPDATE {b.schema}.meta SET value = '99' WHERE key = 'schema_version'")
    other = PostgresStorageBackend(pg_dsn, schema=b.schema)
    with pytest.raises(ConfigError, match=r"has version 99, newer than this magsag") as info:
        await other.initialize()
    assert "\n" not in str(info.value)
    with pytest.raises(RuntimeError, match="initialize"):
        await other.get_run("x")


async def test_timescale_requested_without_the_extension(pg_dsn, pg_schemas, admin) -> None:
    if await admin.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"):
        pytest.skip("this server has TimescaleDB; the fallback error cannot happen")
    b = PostgresStorageBackend(pg_dsn, schema=pg_schemas.sub("tsdb"), timescale=True)
    with pytest.raises(ConfigError, match="timescaledb extension is not available"):
        await b.initialize()
    # auto-detection falls back to native partitions
    auto = PostgresStorageBackend(pg_dsn, schema=pg_schemas.sub("tsdbauto"))
    await auto.initialize()
    try:
        assert auto.partitioning == "native"
    finally:
        await auto.close()


def test_schema_names_are_plain_identifiers(pg_dsn) -> None:
    for bad in ("Magsag", "my-schema", 'x"; drop', "", "1abc", "a" * 64):
        with pytest.raises(ConfigError, match="schema name"):
            PostgresStorageBackend(pg_dsn, schema=bad)


def test_built_from_settings(monkeypatch, pg_dsn) -> None:
    monkeypatch.setenv("MAGSAG_STORAGE_BACKEND", "postgres")
    monkeypatch.setenv("MAGSAG_STORAGE_DSN", "postgresql://app:s3cr3t-pw@db.example:6543/telemetry")
    monkeypatch.setenv("MAGSAG_STORAGE_PG_POOL_MAX", "7")
    monkeypatch.setenv("MAGSAG_STORAGE_PG_STATEMENT_TIMEOUT_MS", "1234")
    monkeypatch.setenv("MAGSAG_STORAGE_PG_SCHEMA", "telemetry_hot")
    backend = backend_from_settings(load_settings())
    assert isinstance(backend, PostgresStorageBackend)
    assert (backend.pool_max, backend.statement_timeout_ms, backend.schema) == (7, 1234, "telemetry_hot")
    assert backend.where == "app@db.example:6543/telemetry"
    assert "s3cr3t" not in repr(backend)

    monkeypatch.setenv("MAGSAG_STORAGE_PG_SCHEMA", "Telemetry")
    with pytest.raises(ConfigError, match="MAGSAG_STORAGE_PG_SCHEMA"):
        backend_from_settings(load_settings())
    monkeypatch.delenv("MAGSAG_STORAGE_PG_SCHEMA")

    monkeypatch.setenv("MAGSAG_STORAGE_BACKEND", "timescale")
    assert backend_from_settings(load_settings())._want_timescale is True

    monkeypatch.delenv("MAGSAG_STORAGE_DSN")
    with pytest.raises(ConfigError, match="MAGSAG_STORAGE_DSN is required"):
        backend_from_settings(load_settings())


def test_documented_import_path() -> None:
    from magsag.storage.backends.postgres import PostgresStorageBackend as Documented

    assert Documented is PostgresStorageBackend
    assert Documented.name == "postgres"
