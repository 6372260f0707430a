"""A run's delegation tree (MAG → SAG → ...), read through the documented API only.

Kept in this one function so that a store-level ``get_run_tree`` can replace it without
touching the HTTP layer. Children of a run are found two ways, across hot store and lake:
the ``run_id`` named by its ``delegation`` events' payloads, and the runs that started
while it ran and name it as ``parent_run_id``. Bounded: at most ``max_nodes`` runs and
``max_depth`` levels (``truncated`` says when a bound was hit).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from magsag.backends.schema import DELEGATION

SCAN_RUNS = 5000  # most runs listed per level to find a run's children by parent_run_id


async def run_tree(storage: Any, run_id: str, *, max_nodes: int = 500, max_depth: int = 10) -> dict[str, Any] | None:
    """``{"run": <node>, "nodes": n, "truncated": bool}``; each node is the run record plus
    ``children`` (oldest first). None when the run does not exist."""
    root = await storage.get_run(run_id)
    if root is None:
        return None
    seen = {run_id}
    state = {"nodes": 1, "truncated": False}

    async def children_of(run: dict[str, Any]) -> list[dict[str, Any]]:
        ids: list[str] = []
        async for e in storage.get_events(run["run_id"], event_type=DELEGATION):
            child = (e.get("payload") or {}).get("run_id")
            if isinstance(child, str) and child not in ids:
                ids.append(child)
        start = datetime.fromisoformat(run["started_at"])
        end = datetime.fromisoformat(run["ended_at"]) + timedelta(seconds=1) if run.get("ended_at") else None
        listed = await storage.list_runs(since=start, until=end, limit=SCAN_RUNS)
        by_id = {r["run_id"]: r for r in listed}
        ids += [r["run_id"] for r in listed if r.get("parent_run_id") == run["run_id"] and r["run_id"] not in ids]
        found = []
        for cid in ids:
            if cid in seen:
                continue
            child = by_id.get(cid) or await storage.get_run(cid)
            if child is None or child.get("parent_run_id") not in (None, run["run_id"]):
                continue
            found.append(child)
        return sorted(found, key=lambda r: (r["started_at"], r["run_id"]))

    async def grow(node: dict[str, Any], depth: int) -> None:
        node["children"] = []
        if depth >= max_depth:
            state["truncated"] = True
            return
        for child in await children_of(node):
            if state["nodes"] >= max_nodes:
                state["truncated"] = True
                return
            seen.add(child["run_id"])
            state["nodes"] += 1
            node["children"].append(child)
            await grow(child, depth + 1)

    await grow(root, 0)
    return {"run": root, "nodes": state["nodes"], "truncated": state["truncated"]}
