"""A short summary read back from the lake with DuckDB: per agent and day, runs, failures,
error rate, cost and tokens (from the runs files: each run's own spend, the rollup rule of
docs/query.md, so the column sums to the money spent), events and error events (from the
events files). It reads the lake's live files (the manifest's committed files, or the
plain glob of a lake without a manifest) with Hive partitioning, like every other reader:
a crashed job's uncommitted leftover is never counted.
"""

from __future__ import annotations

from typing import Any

from magsag.backends.duckdb_sql import sql_list
from magsag.backends.errors import NotFoundError
from magsag.lakehouse import layout
from magsag.lakehouse.lakecheck import diagnose
from magsag.lakehouse.lakefiles import SnapshotReader
from magsag.lakehouse.objstore import Lake, store_errors


def _connect(lake: Lake) -> Any:
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    if not lake.is_local:
        con.register_filesystem(lake.fs)  # any fsspec protocol, no httpfs needed
    return con


def lake_summary(lake: Lake, *, days: int | None = 3, agent: str | None = None) -> dict[str, Any]:
    """Per (day, agent) figures of the newest ``days`` lake days (all when None or 0).

    Raises :class:`~magsag.backends.errors.NotFoundError` when the lake holds no data yet.
    """
    snap = SnapshotReader(lake).snapshot()
    uris = {d: [f.uri for f in snap.of(d)] for d in layout.DATASETS}
    has_runs, has_events = bool(uris[layout.RUNS]), bool(uris[layout.EVENTS])
    if not (has_runs or has_events):
        raise NotFoundError(f"lake {lake.uri()} holds no data yet (run `magsag data tier` first)")
    con = _connect(lake)
    try:

        def src(dataset: str) -> str:
            return f"read_parquet({sql_list(uris[dataset])}, hive_partitioning = true)"

        runs = (
            f"SELECT CAST(dt AS DATE) AS dt, agent_slug, count(*) AS runs, "
            f"count(*) FILTER (WHERE status = 'failed') AS failed, "
            f"sum(TRY_CAST(json_extract_string(metrics, '$.cost_usd') AS DOUBLE)) AS cost_usd, "
            f"sum(TRY_CAST(json_extract_string(metrics, '$.tokens') AS BIGINT)) AS tokens "
            f"FROM {src(layout.RUNS)} GROUP BY ALL"
            if has_runs
            else "SELECT NULL::DATE AS dt, NULL AS agent_slug, 0 AS runs, 0 AS failed, "
            "NULL::DOUBLE AS cost_usd, NULL::BIGINT AS tokens WHERE false"
        )
        events = (
            f"SELECT CAST(dt AS DATE) AS dt, agent_slug, count(*) AS events, "
            f"count(*) FILTER (WHERE level IN ('error', 'critical')) AS error_events "
            f"FROM {src(layout.EVENTS)} GROUP BY ALL"
            if has_events
            else "SELECT NULL::DATE AS dt, NULL AS agent_slug, 0 AS events, 0 AS error_events WHERE false"
        )
        where = "WHERE agent_slug = $agent" if agent else ""
        sql = f"""
            WITH r AS ({runs}), e AS ({events}),
            j AS (
                SELECT coalesce(r.dt, e.dt) AS dt, coalesce(r.agent_slug, e.agent_slug) AS agent_slug,
                       coalesce(r.runs, 0) AS runs, coalesce(r.failed, 0) AS failed,
                       round(coalesce(r.failed, 0) / nullif(r.runs, 0), 4) AS error_rate,
                       round(r.cost_usd, 4) AS cost_usd, r.tokens,
                       coalesce(e.events, 0) AS events, coalesce(e.error_events, 0) AS error_events
                FROM r FULL OUTER JOIN e ON r.dt = e.dt AND r.agent_slug = e.agent_slug
            ),
            picked AS (SELECT DISTINCT dt FROM j ORDER BY dt DESC {"LIMIT " + str(int(days)) if days else ""})
            SELECT * FROM j {where} {"AND" if where else "WHERE"} dt IN (SELECT dt FROM picked)
            ORDER BY dt DESC, cost_usd DESC NULLS LAST, agent_slug
        """
        with store_errors(lake, "reading the lake with DuckDB"):
            try:
                cur = con.execute(sql, {"agent": agent} if agent else None)
                cols = [d[0] for d in cur.description]
                rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
                span = con.execute(
                    f"SELECT min(CAST(dt AS DATE)), max(CAST(dt AS DATE)), count(DISTINCT dt), count(*) "
                    f"FROM {src(layout.EVENTS if has_events else layout.RUNS)}"
                ).fetchone()
            except Exception as exc:
                diagnose(lake, [f for fs in snap.files.values() for f in fs], exc)  # name a damaged file
                raise
    finally:
        con.close()
    for r in rows:
        r["dt"] = r["dt"].isoformat() if r["dt"] is not None else None
    return {
        "lake": lake.uri(),
        "first_day": span[0].isoformat() if span[0] else None,
        "last_day": span[1].isoformat() if span[1] else None,
        "days": span[2],
        "rows": span[3],
        "summary": rows,
    }
