"""DDL, versioned migrations and day-partition naming of the PostgreSQL hot store.

Everything lives in one schema (``magsag`` by default), so a database can hold several
stores side by side and tests can use a fresh schema each. ``<schema>.meta`` records
the schema version and the partitioning mode; :func:`migrate` brings an older schema up
step by step under an advisory lock, so running ``init`` twice, from two processes at
once, or on an older schema is safe.

Events are range-partitioned by ``ts``, one partition per UTC day named
``events_YYYYMMDD`` (native declarative partitioning), or a TimescaleDB hypertable with
one-day chunks when that extension is available at the first ``init``. Uniqueness is
``(ts, event_id)``: a unique key of a partitioned table must contain the partition key,
and ``event_id`` is a UUIDv7 derived from ``ts``, so a reload of the same events finds
the same key and is skipped.

Version 2 adds ``tier_batches``, the ledger of the tiering job
(:mod:`magsag.backends.postgres.tiering`), and pins ``events_seq`` to ``CACHE 1``.
Version 3 adds what ``stream_events`` reads and listens to (:func:`_v3`).

Full-text search indexes a generated ``tsvector`` over ``msg`` with the ``simple``
configuration (lower-casing, no stemming, no stop words). Before parsing, every run of
characters that are not letters, digits or spaces becomes one space, so words are the
letter/digit runs SQLite's ``unicode61`` tokenizer finds: ``mcp.call`` is the two words
``mcp`` and ``call``. Unlike SQLite (``remove_diacritics 2``) accents are kept: ``café``
does not match ``cafe`` (folding them with ``normalize()`` cost half the ingest speed).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING

from magsag.backends.errors import ConfigError
from magsag.backends.schema import EVENT_COLUMNS, US_PER_DAY

if TYPE_CHECKING:
    import asyncpg

PG_SCHEMA_VERSION = 3
PARTITION_PREFIX = "events_"
FTS_CONFIG = "simple"
FTS_MAX_CHARS = 100_000
GIN_PENDING_KB = 512  # longer messages are indexed up to here (a tsvector holds at most 1 MB)
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PARTITION_NAME = re.compile(r"^events_(\d{8})$")

EVENT_COLUMN_LIST = ", ".join(EVENT_COLUMNS)

# Same tokens as SQLite's unicode61 tokenizer: every run of characters that are neither
# letters, digits nor white space becomes a space before the 'simple' parser sees the
# text, so it never forms host, path, e-mail or version tokens. All of it is IMMUTABLE,
# as a generated column requires.
FTS_DOCUMENT = (
    f"to_tsvector('{FTS_CONFIG}'::regconfig, regexp_replace(left(coalesce(msg, ''), {FTS_MAX_CHARS}), "
    "'[^[:alnum:][:space:]]+', ' ', 'g'))"
)


def check_schema_name(name: str) -> str:
    """A plain lower-case identifier, so it never needs quoting or escaping."""
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        raise ConfigError(
            f"PostgreSQL schema name must be lower-case letters, digits and '_' (at most 63), got {name!r}"
        )
    return name


# ----------------------------------------------------------------- partitions


def day_number(ts_us: int) -> int:
    """Days since 1970-01-01 of a timestamp in microseconds (UTC)."""
    return ts_us // US_PER_DAY


def day_date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


def date_day(value: date) -> int:
    return (value - date(1970, 1, 1)).days


def partition_name(day: int) -> str:
    """``events_YYYYMMDD`` for a day number."""
    return PARTITION_PREFIX + day_date(day).strftime("%Y%m%d")


def partition_day(name: str) -> int | None:
    """The day number of a partition named by :func:`partition_name`, else None."""
    m = _PARTITION_NAME.match(name)
    if not m:
        return None
    text = m.group(1)
    try:
        return date_day(date(int(text[:4]), int(text[4:6]), int(text[6:])))
    except ValueError:
        return None


def _bound(day: int) -> str:
    """Timestamp literal of the start of a day; the day after 9999-12-31 too."""
    try:
        d = day_date(day)
    except OverflowError:
        return "10000-01-01 00:00:00+00"
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d} 00:00:00+00"


def partition_bounds(day: int) -> tuple[str, str]:
    return _bound(day), _bound(day + 1)


def create_partition_sql(schema: str, day: int) -> list[str]:
    """Create a day table shaped like ``events`` and attach it.

    ``ATTACH PARTITION`` takes only a SHARE UPDATE EXCLUSIVE lock on ``events``, so a
    new day never waits for (or blocks) running queries and inserts, as ``CREATE TABLE
    ... PARTITION OF`` would. The table is empty, so the attach does not scan.
    """
    name = partition_name(day)
    lo, hi = partition_bounds(day)
    return [
        f"CREATE TABLE {schema}.{name} (LIKE {schema}.events INCLUDING DEFAULTS INCLUDING GENERATED "
        "INCLUDING CONSTRAINTS INCLUDING STORAGE)",
        f"ALTER TABLE {schema}.events ATTACH PARTITION {schema}.{name} FOR VALUES FROM ('{lo}') TO ('{hi}')",
    ]


LIST_PARTITIONS = """
SELECT c.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass($1)
"""


# ------------------------------------------------------------------ migrations


def _v1(schema: str, timescale: bool) -> list[str]:
    s = schema
    events_tail = ")" if timescale else ") PARTITION BY RANGE (ts)"
    stmts = [
        f"""CREATE TABLE IF NOT EXISTS {s}.runs (
            run_id        text PRIMARY KEY,
            agent_slug    text NOT NULL,
            parent_run_id text,
            status        text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'canceled')),
            started_at    timestamptz NOT NULL,
            ended_at      timestamptz,
            metrics       jsonb NOT NULL DEFAULT '{{}}',
            tags          text[] NOT NULL DEFAULT '{{}}'
        )""",
        f"CREATE INDEX IF NOT EXISTS runs_agent_started ON {s}.runs (agent_slug, started_at)",
        f"CREATE INDEX IF NOT EXISTS runs_status_started ON {s}.runs (status, started_at)",
        f"CREATE INDEX IF NOT EXISTS runs_started ON {s}.runs (started_at)",
        f"CREATE INDEX IF NOT EXISTS runs_parent ON {s}.runs (parent_run_id) WHERE parent_run_id IS NOT NULL",
        f"CREATE INDEX IF NOT EXISTS runs_metrics ON {s}.runs USING gin (metrics jsonb_path_ops)",
        # No cache: appends from one task through several pooled connections keep their order.
        f"CREATE SEQUENCE IF NOT EXISTS {s}.events_seq",
        f"""CREATE TABLE IF NOT EXISTS {s}.events (
            event_id         text NOT NULL,
            ts               timestamptz NOT NULL,
            run_id           text NOT NULL,
            agent_slug       text NOT NULL,
            type             text NOT NULL,
            level            text,
            msg              text,
            payload          jsonb NOT NULL DEFAULT '{{}}',
            span_id          text,
            parent_span_id   text,
            contract_id      text,
            contract_version text,
            artifact_uri     text,
            seq              bigint NOT NULL DEFAULT nextval('{s}.events_seq'),
            msg_tsv          tsvector GENERATED ALWAYS AS ({FTS_DOCUMENT}) STORED,
            PRIMARY KEY (ts, event_id)
        {events_tail}""",
    ]
    stmts += [f"CREATE INDEX IF NOT EXISTS {name} ON {s}.events {spec}" for name, spec in EVENT_INDEXES]
    return stmts


# Indexes of ``events`` (besides the primary key on (ts, event_id)); the benchmark's bare
# baseline table is built from this same list.
EVENT_INDEXES = (
    ("events_run_ts", "(run_id, ts, seq)"),
    ("events_agent_ts", "(agent_slug, ts)"),
    ("events_type_ts", "(type, ts)"),
    ("events_span", "(span_id) WHERE span_id IS NOT NULL"),
    ("events_metric_name", "((payload ->> 'name'), ts) WHERE type = 'metric'"),
    # A 512 kB pending list (default 4 MB) keeps searches fast between autovacuum runs:
    # every search scans the unmerged list of each partition it touches, for a slightly
    # slower COPY (bench/ingest.py --backend postgres measures both; docs/backends.md).
    ("events_payload", f"USING gin (payload jsonb_path_ops) WITH (gin_pending_list_limit = {GIN_PENDING_KB})"),
    ("events_msg_tsv", f"USING gin (msg_tsv) WITH (gin_pending_list_limit = {GIN_PENDING_KB})"),
)


def _v2(schema: str, timescale: bool) -> list[str]:
    """The tiering ledger (``backends/postgres/tiering.py``): one row per claim of a day.

    ``seq_hi`` is the frozen bound of the claim's selection; the partial unique index
    makes a second unfinished claim of the same day impossible, whatever the job lock
    says. ``events_seq`` is pinned to CACHE 1: a per-session cache would hand out numbers
    out of order across connections, and a frozen bound would then admit later rows.
    """
    s = schema
    return [
        f"""CREATE TABLE IF NOT EXISTS {s}.tier_batches (
            batch_id        text PRIMARY KEY,
            dest            text NOT NULL,
            day             date NOT NULL,
            mode            text NOT NULL CHECK (mode IN ('move', 'copy')),
            state           text NOT NULL CHECK (state IN ('claimed', 'exported', 'done')),
            seq_hi          bigint NOT NULL,
            excluded_runs   text[] NOT NULL DEFAULT '{{}}',
            run_ids         text[] NOT NULL DEFAULT '{{}}',
            orphan_runs     text[] NOT NULL DEFAULT '{{}}',
            covered_by      text[] NOT NULL DEFAULT '{{}}',
            files           jsonb NOT NULL DEFAULT '{{}}',
            selected_events bigint,
            event_rows      bigint,
            run_rows        bigint,
            info            jsonb NOT NULL DEFAULT '{{}}',
            created_at      timestamptz NOT NULL,
            finished_at     timestamptz
        )""",
        f"CREATE UNIQUE INDEX IF NOT EXISTS tier_batches_open_day ON {s}.tier_batches (day) WHERE state <> 'done'",
        f"CREATE INDEX IF NOT EXISTS tier_batches_dest_day ON {s}.tier_batches (dest, day, state)",
        f"ALTER SEQUENCE {s}.events_seq CACHE 1 NO CYCLE",
    ]


STREAM_CHANNEL = "magsag_events"  # NOTIFY channel of stream_events; the payload is the schema name


def _v3(schema: str, timescale: bool) -> list[str]:
    """``stream_events`` (:mod:`magsag.backends.postgres.stream`): commit-safe positions and a wake-up.

    ``tx`` is the writing transaction's id (``xid8``, 64 bits, never wraps). Rows stored
    before this version read ``0`` (a constant default is added without rewriting the
    table); new rows get ``pg_current_xact_id()``. ``(tx, seq)`` is indexed for the
    stream's keyset reads (the build locks writes out once, for the time it takes). A
    statement trigger sends ``NOTIFY magsag_events, '<schema>'`` for every insert
    statement: delivered at commit, one per transaction, by any client that writes.
    """
    s = schema
    return [
        f"ALTER TABLE {s}.events ADD COLUMN IF NOT EXISTS tx xid8 NOT NULL DEFAULT '0'",
        f"ALTER TABLE {s}.events ALTER COLUMN tx SET DEFAULT pg_current_xact_id()",
        f"CREATE INDEX IF NOT EXISTS events_stream ON {s}.events (tx, seq)",
        f"""CREATE OR REPLACE FUNCTION {s}.magsag_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{STREAM_CHANNEL}', '{s}');
            RETURN NULL;
        END $$""",
        f"DROP TRIGGER IF EXISTS magsag_notify_events ON {s}.events",
        f"CREATE TRIGGER magsag_notify_events AFTER INSERT ON {s}.events "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.magsag_notify_events()",
    ]


Step = Callable[[str, bool], list[str]]
STEPS: dict[int, Step] = {1: _v1, 2: _v2, 3: _v3}


async def read_meta(conn: asyncpg.Connection, schema: str) -> dict[str, str]:
    """The ``meta`` table as a dict; empty when the schema was never initialized."""
    if await conn.fetchval("SELECT to_regclass($1)", f"{schema}.meta") is None:
        return {}
    rows = await conn.fetch(f"SELECT key, value FROM {schema}.meta")
    return {r["key"]: r["value"] for r in rows}


def target_version() -> int:
    return max(STEPS)


async def migrate(conn: asyncpg.Connection, schema: str, *, timescale: bool) -> tuple[int, dict[str, str]]:
    """Create or upgrade the schema; return (version found before, meta after).

    Each step runs in its own transaction holding an advisory lock on the schema name,
    so concurrent ``init`` calls queue and the second one finds nothing to do.
    """
    target = target_version()
    found = 0
    for attempt in range(target + 1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('magsag.migrate:' || $1))", schema)
            meta = await read_meta(conn, schema)
            current = int(meta.get("schema_version", "0"))
            if attempt == 0:
                found = current
            if current > target:
                raise ConfigError(
                    f"PostgreSQL schema {schema!r} has version {current}, newer than this magsag ({target}); "
                    "upgrade magsag"
                )
            if current == target:
                return found, meta
            mode = meta.get("partitioning") or ("timescale" if timescale else "native")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.meta (key text PRIMARY KEY, value text NOT NULL)")
            step = current + 1
            for sql in STEPS[step](schema, mode == "timescale"):
                await conn.execute(sql)
            if step == 1 and mode == "timescale":
                await conn.execute(
                    "SELECT create_hypertable($1::regclass, 'ts', chunk_time_interval => interval '1 day', "
                    "if_not_exists => true)",
                    f"{schema}.events",
                )
            await conn.executemany(
                f"INSERT INTO {schema}.meta (key, value) VALUES ($1, $2) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [("schema_version", str(step)), ("partitioning", mode), ("fts_config", FTS_CONFIG)],
            )
    raise AssertionError("unreachable")  # pragma: no cover
