"""Every SQL statement the ClickHouse layer runs: DDL, load statements, read queries.

One module, two engines: chDB and a remote server run exactly these strings. Values travel
as ClickHouse query parameters (``{name:Type}``), which both engines bind; only names
(validated identifiers) and lake paths (quoted literals) are written into the text.

The tables follow the canonical Arrow schemas of :mod:`magsag.backends.schema`: a column added
there appears here (DDL, loads, reads) without an edit, and the schema check of
``magsag data clickhouse init`` then reports the existing table as out of date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from magsag.backends.schema import event_arrow_schema, run_arrow_schema

SCHEMA_VERSION = 2  # of the ClickHouse tables; bump when the DDL below changes (v2: events.embedding)
EVENTS, RUNS = "events", "runs"
DATASETS = (EVENTS, RUNS)
LEDGER = "load_ledger"
SCHEMA_TABLE = "schema_info"
STAGE_PREFIX = "_stage_"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_LOW_CARDINALITY = {"agent_slug", "type", "level", "status"}
_BIG_TEXT = {"msg", "payload", "metrics"}  # long, repetitive text: stronger ZSTD


@dataclass(frozen=True)
class TableSpec:
    """Physical layout of one table: what the partition key, sort key and indexes are."""

    time_column: str  # partitions are UTC days of this column
    order_by: tuple[str, ...]  # also the ReplacingMergeTree de-duplication key
    primary_key: tuple[str, ...]  # prefix of order_by kept in the sparse index
    indexes: tuple[tuple[str, str, str, int], ...]  # (name, expression, type, granularity)


MSG_TOKENS = "lowerUTF8(ifNull(msg, ''))"  # the token index's expression; search uses the same
SPECS = {
    EVENTS: TableSpec(
        time_column="ts",
        order_by=("agent_slug", "run_id", "ts", "event_id"),
        primary_key=("agent_slug", "run_id", "ts"),
        indexes=(
            ("msg_tokens", MSG_TOKENS, "tokenbf_v1(32768, 3, 0)", 1),
            ("run_id_bloom", "run_id", "bloom_filter(0.01)", 4),
        ),
    ),
    RUNS: TableSpec(
        time_column="started_at",
        order_by=("agent_slug", "started_at", "run_id"),
        primary_key=("agent_slug", "started_at", "run_id"),
        indexes=(("run_id_bloom", "run_id", "bloom_filter(0.01)", 1),),
    ),
}


# ------------------------------------------------------------------ quoting


def ident(name: str) -> str:
    """A validated, back-quoted identifier."""
    if not _IDENT.match(name):
        raise ValueError(f"not a valid ClickHouse identifier: {name!r}")
    return f"`{name}`"


def table(database: str, name: str) -> str:
    return f"{ident(database)}.{ident(name)}"


def literal(text: str) -> str:
    """A single-quoted ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ------------------------------------------------------------------ columns


@dataclass(frozen=True)
class Column:
    name: str
    source_type: str  # as read from Parquet/Arrow: String, Nullable(String), DateTime64(6, 'UTC'), ...
    stored_type: str  # as stored (LowCardinality where it pays)
    codec: str | None

    @property
    def is_time(self) -> bool:
        return "DateTime64" in self.source_type


def _arrow_to_clickhouse(field: Any) -> str:
    import pyarrow as pa

    t = field.type
    if pa.types.is_timestamp(t):
        unit = {"s": 0, "ms": 3, "us": 6, "ns": 9}[t.unit]
        base = f"DateTime64({unit}, 'UTC')"
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        base = "String"
    elif pa.types.is_list(t):
        inner = _arrow_to_clickhouse(pa.field("item", t.value_type, nullable=False))
        return f"Array({inner})"  # ClickHouse arrays are never NULL: a missing list is empty
    elif pa.types.is_boolean(t):
        base = "Bool"
    elif pa.types.is_integer(t):
        base = f"{'U' if pa.types.is_unsigned_integer(t) else ''}Int{t.bit_width}"
    elif pa.types.is_floating(t):
        base = f"Float{t.bit_width}"
    else:
        raise TypeError(f"no ClickHouse type for Arrow {t} (column {field.name})")
    return f"Nullable({base})" if field.nullable else base


def columns(dataset: str) -> list[Column]:
    """The table's columns, in canonical order, from the canonical Arrow schema."""
    schema = event_arrow_schema() if dataset == EVENTS else run_arrow_schema()
    out = []
    for f in schema:
        src = _arrow_to_clickhouse(f)
        stored, codec = src, "ZSTD(1)"
        if f.name in _LOW_CARDINALITY and src in ("String", "Nullable(String)"):
            stored, codec = f"LowCardinality({src})", None
        elif "DateTime64" in src:
            codec = "Delta, ZSTD(1)"
        elif f.name in _BIG_TEXT:
            codec = "ZSTD(3)"
        out.append(Column(f.name, src, stored, codec))
    return out


# Stored and loaded beside the canonical columns, never read back by the API: each event's
# vector from the lake's optional ``embedding`` column (docs/search.md); empty when a file has
# none. Search with ``cosineDistance(embedding, [...])`` in SQL.
EXTRA_COLUMNS: dict[str, tuple[Column, ...]] = {
    EVENTS: (Column("embedding", "Array(Float32)", "Array(Float32)", "ZSTD(1)"),),
    RUNS: (),
}


def table_columns_all(dataset: str) -> list[Column]:
    """The table's columns: the canonical ones, then :data:`EXTRA_COLUMNS`."""
    return [*columns(dataset), *EXTRA_COLUMNS[dataset]]


def column_names(dataset: str) -> list[str]:
    return [c.name for c in columns(dataset)]


def load_column_names(dataset: str) -> list[str]:
    return [c.name for c in table_columns_all(dataset)]


def structure(dataset: str) -> str:
    """The ``structure`` argument of file()/s3(): how to read the lake's Parquet columns."""
    return ", ".join(f"{c.name} {c.source_type}" for c in table_columns_all(dataset))


def expected_columns(dataset: str) -> list[tuple[str, str]]:
    """(name, type) as system.columns reports them for a table this module created."""
    return [(c.name, c.stored_type) for c in table_columns_all(dataset)]


def add_extra_columns(database: str, dataset: str) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` of the extra columns (schema v1 -> v2)."""
    return [
        f"ALTER TABLE {table(database, dataset)} ADD COLUMN IF NOT EXISTS {ident(c.name)} {c.stored_type}"
        + (f" CODEC({c.codec})" if c.codec else "")
        for c in EXTRA_COLUMNS[dataset]
    ]


# ---------------------------------------------------------------------- DDL


def create_database(database: str) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {ident(database)}"


def ttl_clause(dataset: str, ttl_days: int | None) -> str:
    if not ttl_days:
        return ""
    return f"toDateTime({SPECS[dataset].time_column}) + toIntervalDay({int(ttl_days)})"


def create_table(database: str, dataset: str, ttl_days: int | None = None) -> str:
    spec = SPECS[dataset]
    lines = []
    for c in table_columns_all(dataset):
        codec = f" CODEC({c.codec})" if c.codec else ""
        lines.append(f"    {ident(c.name)} {c.stored_type}{codec}")
    for name, expr, kind, granularity in spec.indexes:
        lines.append(f"    INDEX {name} {expr} TYPE {kind} GRANULARITY {granularity}")
    ttl = ttl_clause(dataset, ttl_days)
    return (
        f"CREATE TABLE IF NOT EXISTS {table(database, dataset)}\n(\n" + ",\n".join(lines) + "\n)\n"
        "ENGINE = ReplacingMergeTree\n"
        f"PARTITION BY toDate({spec.time_column})\n"
        f"PRIMARY KEY ({', '.join(spec.primary_key)})\n"
        f"ORDER BY ({', '.join(spec.order_by)})\n"
        + (f"TTL {ttl}\n" if ttl else "")
        + "SETTINGS index_granularity = 8192\n"
        f"COMMENT 'magsag {dataset}, schema v{SCHEMA_VERSION}'"
    )


def create_ledger(database: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table(database, LEDGER)}\n(\n"
        "    dataset LowCardinality(String),\n"
        "    partition Date,\n"
        "    fingerprint String,\n"
        "    rows UInt64,\n"
        "    files UInt32,\n"
        "    bytes UInt64,\n"
        "    mode LowCardinality(String),\n"
        "    lake String,\n"
        "    job_id String,\n"
        "    loaded_at DateTime64(6, 'UTC')\n"
        ")\nENGINE = ReplacingMergeTree(loaded_at)\nORDER BY (dataset, partition)\n"
        "COMMENT 'magsag: one row per loaded lake partition (latest wins)'"
    )


def create_schema_table(database: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table(database, SCHEMA_TABLE)}\n"
        "(component String, version UInt32, applied_at DateTime64(6, 'UTC'))\n"
        "ENGINE = ReplacingMergeTree(applied_at) ORDER BY component\n"
        "COMMENT 'magsag: schema version of these tables'"
    )


def record_schema_version(database: str) -> str:
    return (
        f"INSERT INTO {table(database, SCHEMA_TABLE)} (component, version, applied_at) "
        "VALUES ('tables', {version:UInt32}, now64(6, 'UTC'))"
    )


def schema_version(database: str) -> str:
    return f"SELECT max(version) FROM {table(database, SCHEMA_TABLE)} WHERE component = 'tables'"


# system tables filter on literals: a bound parameter keeps ClickHouse from pruning by database


def table_columns(database: str, name: str) -> str:
    return (
        f"SELECT name, type FROM system.columns WHERE database = {literal(database)} AND table = {literal(name)} "
        "ORDER BY position"
    )


def tables_in_database(database: str) -> str:
    return f"SELECT name, engine, partition_key, sorting_key FROM system.tables WHERE database = {literal(database)}"


def show_create(database: str, name: str) -> str:
    return f"SHOW CREATE TABLE {table(database, name)}"


def modify_ttl(database: str, dataset: str, ttl_days: int | None) -> str:
    if ttl_days:
        return f"ALTER TABLE {table(database, dataset)} MODIFY TTL {ttl_clause(dataset, ttl_days)}"
    return f"ALTER TABLE {table(database, dataset)} REMOVE TTL"


# -------------------------------------------------------------------- loads


def create_stage(database: str, stage: str, dataset: str) -> str:
    """A staging table with the target's exact structure (REPLACE PARTITION requires it)."""
    return f"CREATE TABLE {table(database, stage)} AS {table(database, dataset)}"


def drop_table(database: str, name: str) -> str:
    return f"DROP TABLE IF EXISTS {table(database, name)}"


def truncate(database: str, name: str) -> str:
    return f"TRUNCATE TABLE {table(database, name)}"


def stale_stages(database: str) -> str:
    """Staging tables a crashed load left behind (older than ``{hours}``)."""
    return (
        f"SELECT name FROM system.tables WHERE database = {literal(database)} "
        f"AND startsWith(name, {literal(STAGE_PREFIX)}) "
        "AND metadata_modification_time < now() - toIntervalHour({hours:UInt32})"
    )


def _brace_list(names: list[str]) -> str:
    for n in names:
        if any(ch in n for ch in "{},*?"):
            raise ValueError(f"lake file name {n!r} contains glob characters")
    return names[0] if len(names) == 1 else "{" + ",".join(names) + "}"


def file_source(directory: str, names: list[str], dataset: str) -> str:
    """``file()`` over some files of one local partition folder (absolute path)."""
    path = literal(directory.rstrip("/") + "/" + _brace_list(names))
    return f"file({path}, 'Parquet', {literal(structure(dataset))})"


def s3_source(
    base_url: str, names: list[str], dataset: str, key: str | None, secret: str | None, token: str | None = None
) -> str:
    """``s3()`` over some files of one partition (``base_url`` is the partition's HTTP URL)."""
    url = literal(base_url.rstrip("/") + "/" + _brace_list(names))
    creds = f"{literal(key)}, {literal(secret or '')}, " if key is not None else "NOSIGN, "
    if key is not None and token:
        creds += f"{literal(token)}, "
    return f"s3({url}, {creds}'Parquet', {literal(structure(dataset))})"


def insert_select(database: str, target: str, dataset: str, source: str) -> str:
    cols = ", ".join(ident(c) for c in load_column_names(dataset))
    return f"INSERT INTO {table(database, target)} ({cols}) SELECT {cols} FROM {source}"


def insert_head(database: str, target: str, columns: list[str]) -> str:
    """Head of an INSERT whose rows follow in a format (chDB's streaming insert: no FORMAT clause)."""
    return f"INSERT INTO {table(database, target)} ({', '.join(ident(c) for c in columns)})"


def probe_source(source: str) -> str:
    """Can the engine read this file? (Parquet metadata only; fails fast.)"""
    return (
        f"SELECT count() FROM {source} SETTINGS s3_retry_attempts = 0, "
        "s3_max_single_read_retries = 0, s3_connect_timeout_ms = 3000, s3_request_timeout_ms = 10000"
    )


def rows_by_day(database: str, name: str, dataset: str) -> str:
    return (
        f"SELECT toString(toDate({SPECS[dataset].time_column})) AS day, count() FROM {table(database, name)} "
        "GROUP BY day ORDER BY day"
    )


def rows_in_partition(database: str, dataset: str) -> str:
    return f"SELECT count() FROM {table(database, dataset)} WHERE toDate({SPECS[dataset].time_column}) = {{day:Date}}"


def replace_partition(database: str, dataset: str, stage: str, day: date) -> str:
    target, source = table(database, dataset), table(database, stage)
    return f"ALTER TABLE {target} REPLACE PARTITION {literal(day.isoformat())} FROM {source}"


def drop_partition(database: str, dataset: str, day: date) -> str:
    return f"ALTER TABLE {table(database, dataset)} DROP PARTITION {literal(day.isoformat())}"


def ledger_insert(database: str) -> str:
    return (
        f"INSERT INTO {table(database, LEDGER)} "
        "(dataset, partition, fingerprint, rows, files, bytes, mode, lake, job_id, loaded_at) VALUES "
        "({dataset:String}, {day:Date}, {fingerprint:String}, {rows:UInt64}, {files:UInt32}, {bytes:UInt64}, "
        "{mode:String}, {lake:String}, {job:String}, now64(6, 'UTC'))"
    )


def ledger_current(database: str) -> str:
    """The latest ledger row per (dataset, partition)."""
    return (
        "SELECT dataset, toString(partition), argMax(fingerprint, loaded_at), argMax(rows, loaded_at), "
        f"toString(max(loaded_at)) FROM {table(database, LEDGER)} GROUP BY dataset, partition "
        "ORDER BY dataset, partition"
    )


# -------------------------------------------------------------------- reads


def select_list(dataset: str) -> str:
    """Columns in canonical order; times as integer microseconds (exact, zone-free)."""
    return ", ".join(f"toUnixTimestamp64Micro({c.name})" if c.is_time else c.name for c in columns(dataset))


def _us(param: str) -> str:
    return f"fromUnixTimestamp64Micro({{{param}:Int64}}, 'UTC')"


class Where:
    """Conditions and their parameters, built together."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: dict[str, Any] = {}

    def add(self, condition: str, **params: Any) -> Where:
        self.parts.append(condition)
        self.params.update(params)
        return self

    def window(self, column: str, agent: str | None, since_us: int | None, until_us: int | None) -> Where:
        if agent is not None:
            self.add("agent_slug = {agent:String}", agent=agent)
        if since_us is not None:
            self.add(f"{column} >= {_us('since')}", since=since_us)
        if until_us is not None:
            self.add(f"{column} < {_us('until')}", until=until_us)
        return self

    def sql(self) -> str:
        return (" WHERE " + " AND ".join(self.parts)) if self.parts else ""


def get_run(database: str) -> str:
    return f"SELECT {select_list(RUNS)} FROM {table(database, RUNS)} FINAL WHERE run_id = {{run_id:String}} LIMIT 1"


def list_runs(database: str, where: Where) -> str:
    return (
        f"SELECT {select_list(RUNS)} FROM {table(database, RUNS)} FINAL{where.sql()} "
        "ORDER BY started_at DESC, run_id DESC LIMIT {limit:UInt64} OFFSET {offset:UInt64}"
    )


def events_page(database: str, where: Where) -> str:
    """One page of a run's events after a (ts, event_id) cursor, oldest first."""
    cursor = f"(ts, event_id) > ({_us('after_ts')}, {{after_id:String}})"
    return (
        f"SELECT {select_list(EVENTS)} FROM {table(database, EVENTS)}{where.sql()} AND {cursor} "
        "ORDER BY ts, event_id LIMIT {page:UInt64}"
    )


def search_words(database: str, where: Where, n_words: int) -> str:
    """Every word must be a token of msg (served by the token bloom filter); best match first.

    The score counts occurrences of the words (case-insensitive), so a message that repeats
    them ranks first; shorter messages break ties, then newer ones.
    """
    hits = " + ".join(f"countSubstringsCaseInsensitiveUTF8(ifNull(msg, ''), {{w{i}:String}})" for i in range(n_words))
    return (
        f"SELECT {select_list(EVENTS)}, toFloat64({hits}) AS score FROM {table(database, EVENTS)}{where.sql()} "
        "ORDER BY score DESC, length(ifNull(msg, '')) ASC, ts DESC LIMIT {limit:UInt64}"
    )


def word_condition(i: int) -> str:
    return f"hasToken({MSG_TOKENS}, {{w{i}:String}})"


def search_regex(database: str, where: Where) -> str:
    """Raw mode: an RE2 regular expression over msg, most matches first."""
    return (
        f"SELECT {select_list(EVENTS)}, toFloat64(countMatches(ifNull(msg, ''), {{pattern:String}})) AS score "
        f"FROM {table(database, EVENTS)}{where.sql()} ORDER BY score DESC, ts DESC LIMIT {{limit:UInt64}}"
    )


METRIC_AGGREGATES = {
    "avg": "avg(v)",
    "sum": "sum(v)",
    "min": "min(v)",
    "max": "max(v)",
    "count": "count()",
    # quantileExactInclusive interpolates linearly between ranks, like the hot stores' percentiles
    **{f"p{q}": f"quantileExactInclusive({q / 100})(v)" for q in (50, 90, 95, 99)},
}


def query_metrics(database: str, where: Where, aggregation: str) -> str:
    agg = METRIC_AGGREGATES[aggregation]
    return (
        f"SELECT toFloat64({agg}), count() FROM (SELECT JSONExtractFloat(ifNull(payload, '{{}}'), 'value') AS v "
        f"FROM {table(database, EVENTS)}{where.sql()})"
    )


def metric_conditions(where: Where, metric_name: str) -> Where:
    where.add("type = 'metric'")
    where.add("JSONExtractString(ifNull(payload, '{}'), 'name') = {metric:String}", metric=metric_name)
    return where.add("JSONType(ifNull(payload, '{}'), 'value') IN ('Int64', 'UInt64', 'Double')")
