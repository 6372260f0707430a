"""Creating and checking the ClickHouse tables (``magsag data clickhouse init``).

:func:`init_schema` is idempotent: it creates what is missing, records the schema version,
applies the TTL from the settings, and refuses (one line, :class:`SchemaMismatch`) tables
that exist with other columns or keys than this version creates, instead of loading
into them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.clickhouse.engines import Engine, SchemaMismatch, open_engine

if TYPE_CHECKING:
    from magsag.lakehouse.settings import StorageSettings

_KEYS = {
    sql.EVENTS: ("toDate(ts)", ", ".join(sql.SPECS[sql.EVENTS].order_by)),
    sql.RUNS: ("toDate(started_at)", ", ".join(sql.SPECS[sql.RUNS].order_by)),
}


def tables(engine: Engine) -> dict[str, tuple[str, str, str]]:
    """name -> (engine, partition key, sorting key) of every table in the engine's database."""
    return {n: (e, pk, sk) for n, e, pk, sk in engine.rows(sql.tables_in_database(engine.database))}


def check_table(engine: Engine, dataset: str, info: tuple[str, str, str] | None) -> None:
    """Raise :class:`SchemaMismatch` naming the first difference from the expected table."""
    where = f"table {engine.database}.{dataset} on {engine.describe()}"
    hint = "load into another database (MAGSAG_CLICKHOUSE_DATABASE) or drop the table and load again"
    if info is None:
        raise SchemaMismatch(f"{where} does not exist (run `magsag data clickhouse init`)")
    engine_name, partition_key, sorting_key = info
    if engine_name != "ReplacingMergeTree":
        raise SchemaMismatch(f"{where} is a {engine_name}, expected ReplacingMergeTree; {hint}")
    want_partition, want_sort = _KEYS[dataset]
    if partition_key != want_partition or sorting_key != want_sort:
        raise SchemaMismatch(
            f"{where} is partitioned by {partition_key!r} and sorted by {sorting_key!r}, "
            f"expected {want_partition!r} / {want_sort!r}; {hint}"
        )
    have = list(engine.rows(sql.table_columns(engine.database, dataset)))
    want = sql.expected_columns(dataset)
    have_map, want_map = dict(have), dict(want)
    for name, typ in want:
        if name not in have_map:
            raise SchemaMismatch(f"{where} has no column {name} ({typ}) of schema v{sql.SCHEMA_VERSION}; {hint}")
        if have_map[name] != typ:
            raise SchemaMismatch(f"{where}: column {name} is {have_map[name]}, expected {typ}; {hint}")
    extra = [n for n, _ in have if n not in want_map]
    if extra:
        raise SchemaMismatch(f"{where} has columns this version does not know: {', '.join(extra)}; {hint}")


def _check_version(engine: Engine, present: dict[str, Any]) -> int | None:
    version = None
    if sql.SCHEMA_TABLE in present:
        v = engine.value(sql.schema_version(engine.database))
        version = int(v) if v else None
    if version is not None and version > sql.SCHEMA_VERSION:
        raise SchemaMismatch(
            f"database {engine.database} on {engine.describe()} holds schema v{version}, newer than this "
            f"version's v{sql.SCHEMA_VERSION}; upgrade magsag-storage"
        )
    return version


def init_schema(engine: Engine, ttl_days: int | None = None, *, apply_ttl: bool = True) -> dict[str, Any]:
    """Create the database and tables if missing, check existing ones; return what was done."""
    db = engine.database
    created: list[str] = []
    engine.command(sql.create_database(db))
    present = tables(engine)
    version = _check_version(engine, present)
    for dataset in sql.DATASETS:
        if dataset in present:
            _add_extra_columns(engine, dataset)
            check_table(engine, dataset, present[dataset])
            if apply_ttl:
                _apply_ttl(engine, dataset, ttl_days)
        else:
            engine.command(sql.create_table(db, dataset, ttl_days))
            created.append(dataset)
    for name, ddl in ((sql.LEDGER, sql.create_ledger(db)), (sql.SCHEMA_TABLE, sql.create_schema_table(db))):
        if name not in present:
            engine.command(ddl)
            created.append(name)
    if version != sql.SCHEMA_VERSION:
        engine.command(sql.record_schema_version(db), {"version": sql.SCHEMA_VERSION})
    return {
        "engine": engine.describe(),
        "database": db,
        "schema_version": sql.SCHEMA_VERSION,
        "created": created,
        "ttl_days": ttl_days,
    }


def ensure_schema(engine: Engine, ttl_days: int | None = None) -> None:
    """Before loading or reading: tables present and as expected (created when missing)."""
    present = tables(engine)
    if all(n in present for n in (*sql.DATASETS, sql.LEDGER, sql.SCHEMA_TABLE)):
        _check_version(engine, present)
        for dataset in sql.DATASETS:
            _add_extra_columns(engine, dataset)
            check_table(engine, dataset, present[dataset])
        return
    init_schema(engine, ttl_days, apply_ttl=False)


def _add_extra_columns(engine: Engine, dataset: str) -> None:
    """Tables of schema v1 gain the extra columns (``events.embedding``); nothing else changes."""
    have = {name for name, _ in engine.rows(sql.table_columns(engine.database, dataset))}
    if all(c.name in have for c in sql.EXTRA_COLUMNS[dataset]):
        return
    for statement in sql.add_extra_columns(engine.database, dataset):
        engine.command(statement)


def _apply_ttl(engine: Engine, dataset: str, ttl_days: int | None) -> None:
    create = str(engine.value(sql.show_create(engine.database, dataset)) or "")
    want = sql.ttl_clause(dataset, ttl_days)
    has_ttl = "\nTTL " in create or " TTL " in create
    if want and (not has_ttl or want not in create):
        engine.command(sql.modify_ttl(engine.database, dataset, ttl_days))
    elif not want and has_ttl:
        engine.command(sql.modify_ttl(engine.database, dataset, None))


def init_from_settings(settings: StorageSettings) -> dict[str, Any]:
    """``magsag data clickhouse init``: the configured engine's tables, created or checked."""
    with open_engine(settings) as engine:
        return init_schema(engine, settings.clickhouse_ttl_days)


def ledger_from_settings(settings: StorageSettings) -> list[dict[str, Any]]:
    """The latest ledger row per loaded partition, oldest day first."""
    with open_engine(settings) as engine:
        ensure_schema(engine, settings.clickhouse_ttl_days)
        out = []
        for dataset, day, fp, rows, loaded_at in engine.rows(sql.ledger_current(engine.database)):
            out.append({"dataset": dataset, "dt": day, "rows": int(rows), "fingerprint": fp, "loaded_at": loaded_at})
        return out
