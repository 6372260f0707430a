"""The SQL views of :func:`magsag.lakehouse.connect`: hot + lake as one, each row once.

``hot_events``/``hot_runs`` read the hot store as its ``duckdb_source`` capability says
(attached read-only, or a snapshot), ``lake_events``/``lake_runs`` read the lake's live
Parquet files with Hive partitioning (a ``dt`` filter prunes files), and
``events``/``runs`` put both together with a ``tier`` column.

Deduplication without a full anti-join: tiering copies a day to the lake before it
deletes it from the hot store, so a row can be in both tiers only on a day at or after
the *boundary* (the oldest day still in the hot store, or the day after the newest
lake day). Lake partitions before the boundary are taken as they are; the few at or
after it skip rows whose id the hot store still has. The boundary is fixed when the
views are made: a connection kept open while tiering runs stays correct (newly tiered
days fall after the boundary), only the share of the lake that is deduplicated grows.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from magsag.backends.capabilities import HotSource
from magsag.backends.duckdb_sql import sql_list
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS
from magsag.lakehouse.lakefiles import LakeSnapshot

if TYPE_CHECKING:
    import duckdb

HOT = "magsag_hot"  # catalog name of the attached hot store

EVENT_TYPES_SQL = {c: "VARCHAR" for c in EVENT_COLUMNS} | {"ts": "TIMESTAMPTZ"}
RUN_TYPES_SQL = {c: "VARCHAR" for c in RUN_COLUMNS} | {
    "started_at": "TIMESTAMPTZ",
    "ended_at": "TIMESTAMPTZ",
    "tags": "VARCHAR[]",
}
_COLUMNS = {"events": (EVENT_COLUMNS, EVENT_TYPES_SQL, "event_id"), "runs": (RUN_COLUMNS, RUN_TYPES_SQL, "run_id")}

BASE_VIEWS = ("events", "runs", "lake_events", "lake_runs", "hot_events", "hot_runs")
DERIVED_VIEWS = ("mcp_calls", "metrics", "costs", "run_summary")
VIEWS = BASE_VIEWS + DERIVED_VIEWS


def empty_select(dataset: str) -> str:
    cols, types, _ = _COLUMNS[dataset]
    return "SELECT " + ", ".join(f"NULL::{types[c]} AS {c}" for c in cols) + ", NULL::DATE AS dt WHERE false"


def lake_select(dataset: str, uris: list[str]) -> str:
    """Canonical columns + ``dt`` of the given files (Hive partitioning: ``dt`` filters prune)."""
    cols, _, _ = _COLUMNS[dataset]
    if not uris:
        return empty_select(dataset)
    return f"SELECT {', '.join(cols)}, dt FROM read_parquet({sql_list(uris)}, hive_partitioning = true)"


def no_hot_source() -> HotSource:
    return HotSource(None, empty_select("events"), empty_select("runs"))


def boundary(hot_oldest: date | None, lake_days: list[date]) -> date | None:
    """First lake day that may hold rows the hot store also has (None: no lake at all)."""
    if not lake_days:
        return None
    after_lake = lake_days[-1] + timedelta(days=1)
    return after_lake if hot_oldest is None else min(hot_oldest, after_lake)


def _union(dataset: str, cut: date | None, newest: date | None) -> str:
    """``hot UNION ALL lake``; lake days from ``cut`` on skip ids the hot store has.

    The views list the lake files of one snapshot, so when no file of it is at or after
    ``cut`` (``newest`` < ``cut``) that second lake branch could only ever be empty and is
    left out (it would open the hot store once more per query for nothing).
    """
    _, _, key = _COLUMNS[dataset]
    hot = f"SELECT *, 'hot' AS tier FROM hot_{dataset}"
    if cut is None:
        return hot
    # A hot placeholder run (made for a late event) never hides the lake's record of the run.
    real = f" AND NOT ({PLACEHOLDER_SQL})" if dataset == "runs" else ""
    if dataset == "runs":
        hot = (
            f"SELECT h.*, 'hot' AS tier FROM hot_runs h WHERE NOT (({PLACEHOLDER_SQL}) "
            "AND EXISTS (SELECT 1 FROM lake_runs l WHERE l.run_id = h.run_id))"
        )
    d = f"DATE '{cut.isoformat()}'"
    sql = f"{hot}\nUNION ALL SELECT *, 'lake' AS tier FROM lake_{dataset} WHERE dt < {d}"
    if newest is not None and newest >= cut:
        sql += (
            f"\nUNION ALL SELECT l.*, 'lake' AS tier FROM lake_{dataset} l WHERE l.dt >= {d} "
            f"AND NOT EXISTS (SELECT 1 FROM hot_{dataset} h WHERE h.{key} = l.{key}{real})"
        )
    return sql


# What a hot store auto-creates for an event of an unknown run (backends/tiering/protocol.py).
PLACEHOLDER_SQL = (
    "h.status = 'running' AND h.parent_run_id IS NULL AND coalesce(h.metrics, '{}') IN ('{}', '') "
    "AND coalesce(len(h.tags), 0) = 0"
)


_NUMERIC = "json_type(payload, '$.value') IN ('BIGINT', 'UBIGINT', 'DOUBLE')"

DERIVED_SQL = {
    "mcp_calls": (
        "SELECT event_id, ts, dt, tier, run_id, agent_slug, span_id, level, msg, "
        "payload ->> 'server_id' AS server_id, payload ->> 'tool' AS tool, payload ->> 'status' AS status, "
        "TRY_CAST(payload ->> 'latency_ms' AS DOUBLE) AS latency_ms, payload ->> 'transport' AS transport, "
        "payload ->> 'error' AS error FROM events WHERE type = 'mcp.call'"
    ),
    "metrics": (
        "SELECT event_id, ts, dt, tier, run_id, agent_slug, payload ->> 'name' AS name, "
        "TRY_CAST(payload ->> 'value' AS DOUBLE) AS value, payload ->> 'unit' AS unit, "
        f"payload ->> 'model' AS model FROM events WHERE type = 'metric' AND {_NUMERIC}"
    ),
    "costs": (
        "SELECT event_id, ts, dt, tier, run_id, agent_slug, payload ->> 'model' AS model, "
        "TRY_CAST(payload ->> 'input_tokens' AS BIGINT) AS input_tokens, "
        "TRY_CAST(payload ->> 'output_tokens' AS BIGINT) AS output_tokens, "
        "TRY_CAST(payload ->> 'total_tokens' AS BIGINT) AS total_tokens, "
        "TRY_CAST(payload ->> 'cost_usd' AS DOUBLE) AS cost_usd, payload ->> 'step' AS step "
        "FROM events WHERE type = 'cost'"
    ),
    "run_summary": (
        "SELECT run_id, agent_slug, parent_run_id, status, started_at, ended_at, dt, tier, "
        "TRY_CAST(metrics ->> 'duration_ms' AS DOUBLE) / 1000 AS duration_s, "
        "TRY_CAST(metrics ->> 'cost_usd' AS DOUBLE) AS cost_usd, "
        "TRY_CAST(metrics ->> 'tokens' AS BIGINT) AS tokens, "
        # the rollup rule (docs/query.md): cost_usd/tokens are the run's own spend, summed freely;
        # total_* add the delegates' (recorded by a MAG), never summed together with cost_usd
        "coalesce(TRY_CAST(metrics ->> 'total_cost_usd' AS DOUBLE), TRY_CAST(metrics ->> 'cost_usd' AS DOUBLE)) "
        "AS total_cost_usd, "
        "coalesce(TRY_CAST(metrics ->> 'total_tokens' AS BIGINT), TRY_CAST(metrics ->> 'tokens' AS BIGINT)) "
        "AS total_tokens, metrics ->> 'model' AS model, tags FROM runs"
    ),
}


def create_views(con: duckdb.DuckDBPyConnection, hot: HotSource, snap: LakeSnapshot) -> dict[str, date | None]:
    """(Re)create every view; return the dedup boundary of each dataset."""
    cuts: dict[str, date | None] = {}
    for dataset, hot_sql, oldest in (
        ("events", hot.events, hot.oldest_event_day),
        ("runs", hot.runs, hot.oldest_run_day),
    ):
        con.execute(f"CREATE OR REPLACE VIEW hot_{dataset} AS {hot_sql}")
        uris = [f.uri for f in snap.of(dataset)]
        con.execute(f"CREATE OR REPLACE VIEW lake_{dataset} AS {lake_select(dataset, uris)}")
        cuts[dataset] = boundary(oldest, snap.days(dataset))
        days = snap.days(dataset)
        con.execute(f"CREATE OR REPLACE VIEW {dataset} AS {_union(dataset, cuts[dataset], days[-1] if days else None)}")
    for name, sql in DERIVED_SQL.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
    return cuts
