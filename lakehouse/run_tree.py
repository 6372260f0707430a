"""A run's delegation tree (MAG -> SAGs -> ...) and runs by parent, from the views of every tier.

Both read the ``runs``/``run_summary`` views of :func:`magsag.lakehouse.connect` (hot store
and lake as one, each run once), so a tree split across tiers comes back whole. Cost follows
the rollup rule of docs/query.md: ``cost_usd`` is a run's own spend, ``total_cost_usd`` adds
its delegates'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magsag.backends import jsontext

if TYPE_CHECKING:
    import duckdb
    from magsag.lakehouse.settings import StorageSettings

MAX_DEPTH = 32  # a guard against parent cycles in imported data
_ISO = "'%Y-%m-%dT%H:%M:%S.%f+00:00'"  # the connection's time zone is UTC
NODE_COLUMNS = (
    f"run_id, agent_slug, parent_run_id, status, strftime(started_at, {_ISO}) AS started_at, "
    f"strftime(ended_at, {_ISO}) AS ended_at, duration_s, cost_usd, total_cost_usd, tokens, total_tokens, tier"
)


def _connect(settings: StorageSettings | None, con: duckdb.DuckDBPyConnection | None) -> Any:
    if con is not None:
        return con
    from magsag.lakehouse.query import connect

    return connect(settings)


def _rows(cur: Any) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        out.append(dict(zip(cols, row, strict=True)))
    return out


def run_tree(
    run_id: str, settings: StorageSettings | None = None, *, con: duckdb.DuckDBPyConnection | None = None
) -> dict[str, Any] | None:
    """``run_id`` with ``children`` (its delegates, oldest first), recursively; None if unknown."""
    c = _connect(settings, con)
    cur = c.execute(
        f"""
        WITH RECURSIVE t(run_id, depth) AS (
            SELECT run_id, 0 FROM runs WHERE run_id = $id
            UNION
            SELECT r.run_id, t.depth + 1 FROM runs r JOIN t ON r.parent_run_id = t.run_id WHERE t.depth < {MAX_DEPTH}
        )
        SELECT {NODE_COLUMNS}, min(t.depth) AS depth
        FROM t JOIN run_summary USING (run_id)
        GROUP BY ALL ORDER BY depth, started_at, run_id
        """,
        {"id": run_id},
    )
    nodes = _rows(cur)
    if not nodes:
        return None
    by_id: dict[str, dict[str, Any]] = {}
    for n in nodes:
        n.pop("depth")
        n["children"] = []
        by_id.setdefault(n["run_id"], n)
    root = by_id[run_id]
    for n in by_id.values():
        parent = by_id.get(n["parent_run_id"] or "")
        if n is not root and parent is not None:
            parent["children"].append(n)
    return root


def runs_by_parent(
    parent_run_id: str,
    settings: StorageSettings | None = None,
    *,
    limit: int = 100,
    con: duckdb.DuckDBPyConnection | None = None,
) -> list[dict[str, Any]]:
    """The runs ``parent_run_id`` delegated to, newest first (the records ``list_runs`` gives)."""
    c = _connect(settings, con)
    cur = c.execute(
        f"SELECT run_id, agent_slug, parent_run_id, status, strftime(started_at, {_ISO}) AS started_at, "
        f"strftime(ended_at, {_ISO}) AS ended_at, metrics, tags FROM runs "
        "WHERE parent_run_id = $p ORDER BY runs.started_at DESC, run_id LIMIT $n",
        {"p": parent_run_id, "n": int(limit)},
    )
    rows = _rows(cur)
    for r in rows:
        r["metrics"] = jsontext.loads(r["metrics"]) if isinstance(r.get("metrics"), str) else (r.get("metrics") or {})
        r["tags"] = list(r.get("tags") or [])
    return rows
