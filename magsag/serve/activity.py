"""The agents' activity as a few GROUP BY queries on the hot store (SQLite or PostgreSQL).

One read per scrape refresh (:class:`magsag.serve.metrics.LiveMetrics` caches it): runs
by agent and status; runs that ended in the trailing window by agent and status, with
their tokens and cost (the run record's ``metrics``) by model; MCP calls of the window by
server, tool and status with their latency already bucketed in SQL, so the answer is
bounded by the number of label values, never by the number of calls.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from magsag.lakehouse.tiered_backend import unwrap

BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Activity:
    runs: dict[tuple[str, str], int] = field(default_factory=dict)  # (agent, status) -> hot runs
    ended: dict[tuple[str, str], int] = field(default_factory=dict)  # (agent, status) -> ended in window
    costs: dict[tuple[str, str], tuple[int, float, float]] = field(
        default_factory=dict
    )  # (agent, model) -> runs, tokens, usd
    # (server, tool, status) -> (calls, sum of seconds, cumulative counts per BUCKETS_S)
    mcp: dict[tuple[str, str, str], tuple[int, float, list[int]]] = field(default_factory=dict)


def _kind(hot: Any) -> str | None:
    for cls in type(hot).__mro__:
        if cls.__module__ == "magsag.backends.sqlite.store":
            return "sqlite"
        if cls.__module__ == "magsag.backends.postgres.store":
            return "postgres"
    return None


def _sqlite_sql() -> tuple[str, str, str, str]:
    lat = "(CAST(json_extract(payload, '$.latency_ms') AS REAL) / 1000.0)"
    buckets = ", ".join(f"total({lat} <= {b})" for b in BUCKETS_S)
    return (
        "SELECT agent_slug, status, count(*) FROM runs GROUP BY 1, 2",
        "SELECT agent_slug, status, count(*) FROM runs WHERE ended_at >= ? GROUP BY 1, 2",
        "SELECT agent_slug, coalesce(json_extract(metrics, '$.model'), 'none'), count(*), "
        "total(CAST(json_extract(metrics, '$.tokens') AS REAL)), "
        "total(CAST(json_extract(metrics, '$.cost_usd') AS REAL)) "
        "FROM runs WHERE ended_at >= ? GROUP BY 1, 2",
        "SELECT coalesce(json_extract(payload, '$.server_id'), 'unknown'), coalesce(json_extract(payload, '$.tool'), "
        f"'unknown'), coalesce(json_extract(payload, '$.status'), 'unknown'), count(*), total({lat}), {buckets} "
        "FROM events WHERE type = 'mcp.call' AND ts >= ? AND json_type(payload, '$.latency_ms') IN ('integer', 'real') "
        "GROUP BY 1, 2, 3",
    )


def _postgres_sql(s: str) -> tuple[str, str, str, str]:
    lat = "((payload ->> 'latency_ms')::float8 / 1000.0)"
    buckets = ", ".join(f"count(*) FILTER (WHERE {lat} <= {b})" for b in BUCKETS_S)
    num = "CASE WHEN jsonb_typeof(metrics -> '{k}') = 'number' THEN (metrics ->> '{k}')::float8 ELSE 0 END"
    return (
        f"SELECT agent_slug, status, count(*) FROM {s}.runs GROUP BY 1, 2",
        f"SELECT agent_slug, status, count(*) FROM {s}.runs WHERE ended_at >= $1 GROUP BY 1, 2",
        f"SELECT agent_slug, coalesce(metrics ->> 'model', 'none'), count(*), "
        f"sum({num.format(k='tokens')}), sum({num.format(k='cost_usd')}) "
        f"FROM {s}.runs WHERE ended_at >= $1 GROUP BY 1, 2",
        "SELECT coalesce(payload ->> 'server_id', 'unknown'), coalesce(payload ->> 'tool', 'unknown'), "
        f"coalesce(payload ->> 'status', 'unknown'), count(*), sum({lat}), {buckets} "
        f"FROM {s}.events WHERE type = 'mcp.call' AND ts >= $1 AND jsonb_typeof(payload -> 'latency_ms') = 'number' "
        "GROUP BY 1, 2, 3",
    )


async def read(storage: Any, since_us: int) -> Activity:
    """The activity of the hot store behind ``storage`` (runs: all hot; the rest: since ``since_us``)."""
    hot = unwrap(storage)
    kind = _kind(hot)
    if kind == "sqlite":
        q_runs, q_ended, q_costs, q_mcp = _sqlite_sql()

        def fetch(c: Any) -> list[list[Any]]:
            return [
                c.execute(q_runs).fetchall(),
                c.execute(q_ended, (since_us,)).fetchall(),
                c.execute(q_costs, (since_us,)).fetchall(),
                c.execute(q_mcp, (since_us,)).fetchall(),
            ]

        results = await hot.read(fetch)
    elif kind == "postgres":
        q_runs, q_ended, q_costs, q_mcp = _postgres_sql(hot.schema)

        async def fetch_pg(c: Any) -> list[list[Any]]:
            return [
                [tuple(r) for r in await c.fetch(q_runs)],
                [tuple(r) for r in await c.fetch(q_ended, since_us)],
                [tuple(r) for r in await c.fetch(q_costs, since_us)],
                [tuple(r) for r in await c.fetch(q_mcp, since_us)],
            ]

        results = await hot.read(fetch_pg)
    else:
        return Activity()
    runs, ended, costs, mcp = results
    out = Activity()
    out.runs = {(a, s): int(n) for a, s, n in runs}
    out.ended = {(a, s): int(n) for a, s, n in ended}
    merged: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for a, m, n, tok, usd in costs:
        acc = merged[(a, str(m))]
        acc[0] += int(n)
        acc[1] += float(tok or 0)
        acc[2] += float(usd or 0)
    out.costs = {k: (int(v[0]), v[1], v[2]) for k, v in merged.items()}
    out.mcp = {
        (str(r[0]), str(r[1]), str(r[2])): (int(r[3]), float(r[4] or 0), [int(x or 0) for x in r[5:]]) for r in mcp
    }
    return out
