"""The SQL of the PostgreSQL store's optional capabilities (see :mod:`magsag.backends.capabilities`).

Each function takes an asyncpg connection and the store's schema and returns plain rows;
the store's methods run them through its pool (reads retried on a lost connection).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from magsag.backends.capabilities import RunKey, RunSelection
from magsag.backends.postgres.schema import day_date, partition_day
from magsag.backends.schema import RUN_COLUMNS

NUMERIC_VALUE = "jsonb_typeof(payload -> 'value') = 'number'"
METRIC_VALUE = "(payload ->> 'value')::float8"
EXPORT_STATE = "otel_export_state"
_EXPORT_DDL = (
    "CREATE TABLE IF NOT EXISTS {t} (destination TEXT PRIMARY KEY, ended_at_us BIGINT NOT NULL, "
    "run_id TEXT NOT NULL, runs BIGINT NOT NULL DEFAULT 0, updated_at_us BIGINT NOT NULL)"
)


def metric_where(metric_name: str, agent: str | None, lo: int | None, hi: int | None) -> tuple[str, list[Any]]:
    """The numeric samples of a metric: WHERE clause and parameters ($1 = the name)."""
    where = ["type = 'metric'", "payload ->> 'name' = $1", NUMERIC_VALUE]
    params: list[Any] = [metric_name]
    for cond, val in (("agent_slug = ${}", agent), ("ts >= ${}", lo), ("ts < ${}", hi)):
        if val is not None:
            params.append(val)
            where.append(cond.format(len(params)))
    return " AND ".join(where), params


async def metric_samples(
    c: Any, schema: str, metric_name: str, agent: str | None, lo: int | None, hi: int | None
) -> list[tuple[str, float]]:
    cond, params = metric_where(metric_name, agent, lo, hi)
    rows = await c.fetch(f"SELECT event_id, {METRIC_VALUE} AS v FROM {schema}.events WHERE {cond}", *params)
    return [(r[0], float(r[1])) for r in rows]


async def day_stats(c: Any, schema: str) -> tuple[list[Any], list[Any], dict[str, int]]:
    """(day, events, min ts, max ts), (day, runs) and bytes per day (each day is a partition)."""
    day = "(extract(epoch FROM ts) * 1000000)::bigint / 86400000000"
    ev = await c.fetch(f"SELECT {day} AS d, count(*), min(ts), max(ts) FROM {schema}.events GROUP BY d ORDER BY d")
    rday = day.replace("ts", "started_at")
    rn = await c.fetch(f"SELECT {rday} AS d, count(*) FROM {schema}.runs GROUP BY d")
    raw = await c.fetch(
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
        f"{schema}.events",
    )
    sizes = {}
    for name, size in raw:
        d = partition_day(name)
        if d is not None:
            sizes[day_date(d).isoformat()] = int(size)
    return [tuple(r) for r in ev], [tuple(r) for r in rn], sizes


async def activity(c: Any, s: str, since_us: int, buckets: Sequence[float]) -> list[list[tuple[Any, ...]]]:
    lat = "((payload ->> 'latency_ms')::float8 / 1000.0)"
    cumulative = ", ".join(f"count(*) FILTER (WHERE {lat} <= {float(b)})" for b in buckets)
    num = "CASE WHEN jsonb_typeof(metrics -> '{k}') = 'number' THEN (metrics ->> '{k}')::float8 ELSE 0 END"
    queries = (
        (f"SELECT agent_slug, status, count(*) FROM {s}.runs GROUP BY 1, 2", ()),
        (f"SELECT agent_slug, status, count(*) FROM {s}.runs WHERE ended_at >= $1 GROUP BY 1, 2", (since_us,)),
        (
            f"SELECT agent_slug, coalesce(metrics ->> 'model', 'none'), count(*), "
            f"sum({num.format(k='tokens')}), sum({num.format(k='cost_usd')}) "
            f"FROM {s}.runs WHERE ended_at >= $1 GROUP BY 1, 2",
            (since_us,),
        ),
        (
            "SELECT coalesce(payload ->> 'server_id', 'unknown'), coalesce(payload ->> 'tool', 'unknown'), "
            f"coalesce(payload ->> 'status', 'unknown'), count(*), sum({lat}), {cumulative} "
            f"FROM {s}.events WHERE type = 'mcp.call' AND ts >= $1 "
            "AND jsonb_typeof(payload -> 'latency_ms') = 'number' GROUP BY 1, 2, 3",
            (since_us,),
        ),
    )
    return [[tuple(r) for r in await c.fetch(q, *args)] for q, args in queries]


async def finished_runs(c: Any, schema: str, sel: RunSelection, after: RunKey, limit: int) -> list[tuple[Any, ...]]:
    where, params = sel.where(lambda i: f"${i}", after)
    sql = (
        f"SELECT {', '.join(RUN_COLUMNS)} FROM {schema}.runs WHERE {' AND '.join(where)} "
        f"ORDER BY ended_at, run_id LIMIT {int(limit)}"
    )
    return [tuple(r) for r in await c.fetch(sql, *params)]


async def read_export_state(c: Any, schema: str, destination: str) -> tuple[RunKey, int] | None:
    t = f"{schema}.{EXPORT_STATE}"
    await c.execute(_EXPORT_DDL.format(t=t))
    row = await c.fetchrow(f"SELECT ended_at_us, run_id, runs FROM {t} WHERE destination = $1", destination)
    return None if row is None else ((int(row[0]), str(row[1])), int(row[2]))


async def save_export_state(c: Any, schema: str, destination: str, key: RunKey, runs: int, now_us: int) -> None:
    t = f"{schema}.{EXPORT_STATE}"
    await c.execute(_EXPORT_DDL.format(t=t))
    await c.execute(
        f"INSERT INTO {t} (destination, ended_at_us, run_id, runs, updated_at_us) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (destination) DO UPDATE SET ended_at_us = excluded.ended_at_us, run_id = excluded.run_id, "
        "runs = excluded.runs, updated_at_us = excluded.updated_at_us",
        destination,
        key[0],
        key[1],
        runs,
        now_us,
    )


async def export_states(c: Any, schema: str) -> list[tuple[str, RunKey, int]]:
    t = f"{schema}.{EXPORT_STATE}"
    await c.execute(_EXPORT_DDL.format(t=t))
    rows = await c.fetch(f"SELECT destination, ended_at_us, run_id, runs FROM {t} ORDER BY destination")
    return [(str(r[0]), (int(r[1]), str(r[2])), int(r[3])) for r in rows]
