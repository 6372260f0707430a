"""The JSON endpoints: each parses its parameters, calls one library function, returns JSON.

Like the CLI, the HTTP layer adds no query logic of its own: ``/api/runs`` is
``list_runs``, ``/api/runs/{id}`` is ``get_run`` + ``get_events``, ``/api/search`` is
``search_text``, ``/api/metrics`` is ``query_metrics``, ``/api/runs/{id}/tree`` is
:func:`magsag.serve.tree.run_tree`. Errors map to statuses in one place
(:func:`error_response`): malformed parameters 400, unknown run 404, values the store
refuses 422, store unreachable 503; every message is one line without credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from magsag.backends.base import AGGREGATIONS
from magsag.backends.errors import BackendUnavailable, NotFoundError, StorageError, UnsupportedOperation, redact_dsn
from magsag.backends.schema import normalize_level
from magsag.serve.params import BadRequest, Param, parse
from magsag.serve.tree import run_tree

log = logging.getLogger(__name__)

MAX_RUNS = 1000
MAX_EVENTS = 10_000
MAX_HITS = 1000
MAX_TREE_NODES = 2000


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def error_response(exc: BaseException) -> JSONResponse:
    """One status per error kind; the message is one line, never a password."""
    if isinstance(exc, BadRequest):
        status = 400
    elif isinstance(exc, NotFoundError):
        status = 404
    elif isinstance(exc, UnsupportedOperation):
        status = 501
    elif isinstance(exc, BackendUnavailable):
        status = 503
    elif isinstance(exc, StorageError):
        status = 422
    else:
        log.warning("magsag serve: internal error %s", type(exc).__name__)
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return JSONResponse({"error": redact_dsn(text)}, status_code=status)


@dataclass(frozen=True)
class Endpoint:
    path: str
    summary: str
    params: tuple[Param, ...]
    handler: Callable[[Request, dict[str, Any]], Awaitable[Any]]
    path_params: tuple[str, ...] = ()


def json_route(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        try:
            args = parse(request.query_params, endpoint.params)
            return JSONResponse(await endpoint.handler(request, args))
        except Exception as exc:
            return error_response(exc)

    return route


def _storage(request: Request) -> Any:
    return request.app.state.storage


# ------------------------------------------------------------------ handlers

RUN_FILTERS = (
    Param("agent", "string", "Only runs of this agent slug."),
    Param("status", "string", "running, succeeded, failed or canceled."),
    Param("since", "datetime", "Runs started at or after this time."),
    Param("until", "datetime", "Runs started before this time."),
)


async def list_runs(request: Request, a: dict[str, Any]) -> Any:
    runs = await _storage(request).list_runs(
        agent_slug=a["agent"],
        status=a["status"],
        since=a["since"],
        until=a["until"],
        limit=a["limit"],
        offset=a["offset"],
    )
    return {"runs": runs, "limit": a["limit"], "offset": a["offset"]}


async def get_run(request: Request, a: dict[str, Any]) -> Any:
    run_id = request.path_params["run_id"]
    storage = _storage(request)
    run = await storage.get_run(run_id)
    if run is None:
        raise NotFoundError(f"run {run_id!r} not found")
    level = normalize_level(a["level"]) if a["level"] is not None else None  # "loud" is a 422, not an empty list
    events = [e async for e in storage.get_events(run_id, event_type=a["type"], level=level, limit=a["limit"] + 1)]
    return {"run": run, "events": events[: a["limit"]], "truncated": len(events) > a["limit"], "limit": a["limit"]}


async def get_tree(request: Request, a: dict[str, Any]) -> Any:
    run_id = request.path_params["run_id"]
    tree = await run_tree(_storage(request), run_id, max_nodes=a["max_nodes"], max_depth=a["max_depth"])
    if tree is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return tree


async def search(request: Request, a: dict[str, Any]) -> Any:
    hits = await _storage(request).search_text(
        a["q"], agent_slug=a["agent"], since=a["since"], until=a["until"], limit=a["limit"], raw=a["raw"]
    )
    return {"hits": hits, "limit": a["limit"]}


async def metrics(request: Request, a: dict[str, Any]) -> Any:
    return await _storage(request).query_metrics(
        a["name"], agent_slug=a["agent"], since=a["since"], until=a["until"], aggregation=a["agg"]
    )


ENDPOINTS = (
    Endpoint(
        "/api/runs",
        "List runs, newest first (the filters of `magsag data query`).",
        (
            *RUN_FILTERS,
            Param("limit", "integer", f"Most runs (capped at {MAX_RUNS}).", 50, MAX_RUNS),
            Param("offset", "integer", "Skip this many.", 0, 10_000_000),
        ),
        list_runs,
    ),
    Endpoint(
        "/api/runs/{run_id}",
        "One run and its events, oldest first (hot store and lake).",
        (
            Param("type", "string", "Only events of this type."),
            Param("level", "string", "Only events of this level."),
            Param("limit", "integer", f"Most events (capped at {MAX_EVENTS}).", 1000, MAX_EVENTS),
        ),
        get_run,
        ("run_id",),
    ),
    Endpoint(
        "/api/runs/{run_id}/tree",
        "The run's delegation tree: its SAG runs, theirs, and so on.",
        (
            Param("max_nodes", "integer", f"Most runs in the tree (capped at {MAX_TREE_NODES}).", 500, MAX_TREE_NODES),
            Param("max_depth", "integer", "Most levels below the run (capped at 20).", 10, 20),
        ),
        get_tree,
        ("run_id",),
    ),
    Endpoint(
        "/api/search",
        "Full-text search over event messages, best match first.",
        (
            Param(
                "q", "string", "Words to find (all must appear), or the backend's syntax with raw=true.", required=True
            ),
            Param("agent", "string", "Only this agent slug."),
            Param("since", "datetime", "Events at or after this time."),
            Param("until", "datetime", "Events before this time."),
            Param("raw", "boolean", "Pass the backend's own query syntax through.", False),
            Param("limit", "integer", f"Most hits (capped at {MAX_HITS}).", 50, MAX_HITS),
        ),
        search,
    ),
    Endpoint(
        "/api/metrics",
        f"Aggregate `metric` events named `name` ({', '.join(AGGREGATIONS)}).",
        (
            Param("name", "string", "The metric name (payload.name), e.g. latency_ms.", required=True),
            Param("agg", "string", "The aggregation.", "avg"),
            Param("agent", "string", "Only this agent slug."),
            Param("since", "datetime", "Samples at or after this time."),
            Param("until", "datetime", "Samples before this time."),
        ),
        metrics,
    ),
)
