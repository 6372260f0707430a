"""The SQL of the SQLite store's optional capabilities (see :mod:`magsag.backends.capabilities`).

Each function takes a reader (or writer) connection and returns plain rows; the store's
methods run them on its reader pool or writer thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from magsag.backends.base import equal_conditions
from magsag.backends.capabilities import RunKey, RunSelection, merge_days
from magsag.backends.schema import RUN_COLUMNS, US_PER_DAY

_NUMERIC_VALUE = "json_type(payload, '$.value') IN ('integer', 'real')"
EXPORT_STATE = "otel_export_state"
_EXPORT_DDL = (
    f"CREATE TABLE IF NOT EXISTS {EXPORT_STATE} (destination TEXT PRIMARY KEY, ended_at_us BIGINT NOT NULL, "
    "run_id TEXT NOT NULL, runs BIGINT NOT NULL DEFAULT 0, updated_at_us BIGINT NOT NULL)"
)


def window(where: list[str], params: list[Any], agent: str | None, lo: int | None, hi: int | None, col: str) -> None:
    """Append the agent / [lo, hi) conditions every read shares."""
    equal_conditions(where, params, agent_slug=agent)
    for cond, val in ((f"{col} >= ?", lo), (f"{col} < ?", hi)):
        if val is not None:
            where.append(cond)
            params.append(val)


def metric_where(metric_name: str, agent: str | None, lo: int | None, hi: int | None) -> tuple[str, list[Any]]:
    """The numeric samples of a metric: WHERE clause and parameters."""
    where = ["type = 'metric'", "json_extract(payload, '$.name') = ?"]
    params: list[Any] = [metric_name]
    window(where, params, agent, lo, hi, "ts")
    return " AND ".join(where) + f" AND {_NUMERIC_VALUE}", params


METRIC_VALUE = "CAST(json_extract(payload, '$.value') AS REAL)"


def metric_samples(
    c: sqlite3.Connection, metric_name: str, agent: str | None, lo: int | None, hi: int | None
) -> list[tuple[str, float]]:
    cond, params = metric_where(metric_name, agent, lo, hi)
    rows = c.execute(f"SELECT event_id, {METRIC_VALUE} FROM events WHERE {cond}", params).fetchall()
    return [(r[0], float(r[1])) for r in rows]


def day_stats(c: sqlite3.Connection) -> list[dict[str, Any]]:
    ev = c.execute(
        f"SELECT ts / {US_PER_DAY} AS d, count(*), min(ts), max(ts) FROM events GROUP BY d ORDER BY d"
    ).fetchall()
    rn = c.execute(f"SELECT started_at / {US_PER_DAY} AS d, count(*) FROM runs GROUP BY d").fetchall()
    return merge_days(ev, rn, {})


def activity(c: sqlite3.Connection, since_us: int, buckets: Sequence[float]) -> list[list[Any]]:
    lat = "(CAST(json_extract(payload, '$.latency_ms') AS REAL) / 1000.0)"
    cumulative = ", ".join(f"total({lat} <= {float(b)})" for b in buckets)
    return [
        c.execute("SELECT agent_slug, status, count(*) FROM runs GROUP BY 1, 2").fetchall(),
        c.execute(
            "SELECT agent_slug, status, count(*) FROM runs WHERE ended_at >= ? GROUP BY 1, 2", (since_us,)
        ).fetchall(),
        c.execute(
            "SELECT agent_slug, coalesce(json_extract(metrics, '$.model'), 'none'), count(*), "
            "total(CAST(json_extract(metrics, '$.tokens') AS REAL)), "
            "total(CAST(json_extract(metrics, '$.cost_usd') AS REAL)) "
            "FROM runs WHERE ended_at >= ? GROUP BY 1, 2",
            (since_us,),
        ).fetchall(),
        c.execute(
            "SELECT coalesce(json_extract(payload, '$.server_id'), 'unknown'), "
            "coalesce(json_extract(payload, '$.tool'), 'unknown'), "
            f"coalesce(json_extract(payload, '$.status'), 'unknown'), count(*), total({lat}), {cumulative} "
            "FROM events WHERE type = 'mcp.call' AND ts >= ? "
            "AND json_type(payload, '$.latency_ms') IN ('integer', 'real') GROUP BY 1, 2, 3",
            (since_us,),
        ).fetchall(),
    ]


def finished_runs(c: sqlite3.Connection, sel: RunSelection, after: RunKey, limit: int) -> list[tuple[Any, ...]]:
    where, params = sel.where(lambda i: "?", after)
    sql = (
        f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE {' AND '.join(where)} "
        f"ORDER BY ended_at, run_id LIMIT {int(limit)}"
    )
    return c.execute(sql, params).fetchall()


def read_export_state(c: sqlite3.Connection, destination: str) -> tuple[RunKey, int] | None:
    c.execute(_EXPORT_DDL)
    row = c.execute(
        f"SELECT ended_at_us, run_id, runs FROM {EXPORT_STATE} WHERE destination = ?", [destination]
    ).fetchone()
    return None if row is None else ((int(row[0]), str(row[1])), int(row[2]))


def save_export_state(c: sqlite3.Connection, destination: str, key: RunKey, runs: int, now_us: int) -> None:
    c.execute(_EXPORT_DDL)
    c.execute(
        f"INSERT INTO {EXPORT_STATE} (destination, ended_at_us, run_id, runs, updated_at_us) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (destination) DO UPDATE SET ended_at_us = excluded.ended_at_us, run_id = excluded.run_id, "
        "runs = excluded.runs, updated_at_us = excluded.updated_at_us",
        [destination, key[0], key[1], runs, now_us],
    )


def export_states(c: sqlite3.Connection) -> list[tuple[str, RunKey, int]]:
    c.execute(_EXPORT_DDL)
    rows = c.execute(f"SELECT destination, ended_at_us, run_id, runs FROM {EXPORT_STATE} ORDER BY destination")
    return [(str(r[0]), (int(r[1]), str(r[2])), int(r[3])) for r in rows.fetchall()]
