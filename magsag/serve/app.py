"""The ASGI application of ``magsag data serve`` and how it runs.

:func:`create_app` builds the Starlette app over one store opened at start-up (lifespan)
and closed at shutdown. Routes: the JSON API (:mod:`magsag.serve.api`), the SSE stream
(:mod:`magsag.serve.sse`), ``/metrics`` (:mod:`magsag.serve.metrics` plus the append
counters of :mod:`magsag.serve.instrument`), ``/healthz``, ``/openapi.json`` and, when the
OpenTelemetry receiver is installed, its OTLP endpoints (:data:`OTLP_MOUNT`).

**Access.** With a token (``MAGSAG_SERVE_TOKEN``) every path but ``/healthz`` wants
``Authorization: Bearer <token>`` (401 otherwise; compared in constant time). The server
is read-only unless started with ``--allow-writes``: any method but GET/HEAD gets 405,
and the OTLP receiver (the only writer) answers 403. Nothing logs the token or the DSN:
the access log has paths, the start-up line names the store as ``user@host:port/db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from magsag import __version__
from magsag.backends.errors import redact_dsn
from magsag.backends.schema import utc_now
from magsag.lakehouse.settings import StorageSettings
from magsag.serve import instrument
from magsag.serve.api import ENDPOINTS, JSONResponse, json_route
from magsag.serve.metrics import LiveMetrics
from magsag.serve.sse import STREAM_PARAMS, StreamStats, stream

log = logging.getLogger("magsag.serve")

# Where the OpenTelemetry receiver (issue #15, ``magsag.otel.receiver``) is mounted: its
# ``create_app(get_storage)`` returns an ASGI app serving POST /traces and POST /logs, so
# they answer at /v1/traces and /v1/logs here. See otlp_app().
OTLP_MOUNT = "/v1"
OPEN_PATHS = frozenset({"/healthz"})
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8787
    read_only: bool = True
    token: str | None = None
    window_s: float = 3600.0  # trailing window of the activity metrics
    max_streams: int = 64
    metrics_ttl_s: float = 15.0
    clickhouse: bool = False  # compute the ClickHouse load lag (opens the engine at scrape time)
    hot_size_limit_bytes: int | None = None  # exposed as magsag_hot_size_limit_bytes (the HotStoreTooLarge alert)
    log_level: str = "info"

    def __repr__(self) -> str:  # never the token
        token = "set" if self.token else None
        return f"ServeConfig(host={self.host!r}, port={self.port}, read_only={self.read_only}, token={token})"


# ------------------------------------------------------------------ access


class AccessMiddleware:
    """Bearer token and read-only rule, before any route runs (plain ASGI: streams pass through)."""

    def __init__(self, app: ASGIApp, config: ServeConfig):
        self.app = app
        self.token = config.token.encode() if config.token else None
        self.read_only = config.read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.token is not None and path not in OPEN_PATHS and not self._authorized(scope):
            response: Response = JSONResponse(
                {"error": "missing or wrong bearer token (Authorization: Bearer <MAGSAG_SERVE_TOKEN>)"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="magsag"'},
            )
            await response(scope, receive, send)
            return
        if scope.get("method") not in READ_METHODS:
            if path.startswith(OTLP_MOUNT + "/") and self.read_only:
                response = JSONResponse(
                    {"error": "this server is read-only: start it with --allow-writes to accept OTLP"}, status_code=403
                )
                await response(scope, receive, send)
                return
            if not path.startswith(OTLP_MOUNT + "/"):
                response = JSONResponse(
                    {"error": f"method {scope.get('method')} not allowed (the API is read-only)"},
                    status_code=405,
                    headers={"Allow": "GET, HEAD"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token or b"")
        return False


# ---------------------------------------------------------------- the OTLP receiver


def otlp_app(get_storage: Callable[[], Any]) -> ASGIApp | None:
    """The OpenTelemetry receiver's ASGI app, or None while ``magsag.otel.receiver`` does not exist."""
    try:
        from magsag.otel import receiver  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    factory = getattr(receiver, "create_app", None)
    return factory(get_storage) if factory is not None else None


# --------------------------------------------------------------------- the app


def openapi_schema(otlp: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for ep in ENDPOINTS:
        params = [p.openapi() for p in ep.params]
        params += [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in ep.path_params]
        paths[ep.path] = {
            "get": {
                "summary": ep.summary,
                "parameters": params,
                "responses": {
                    "200": {"description": "JSON", "content": {"application/json": {}}},
                    "400": {"description": "malformed parameter"},
                    "404": {"description": "no such run"},
                    "422": {"description": "a value the store refuses"},
                    "503": {"description": "the store is unreachable"},
                },
            }
        }
    paths["/api/stream"] = {
        "get": {
            "summary": "Events as they are committed (Server-Sent Events; resume with Last-Event-ID).",
            "parameters": [
                *(p.openapi() for p in STREAM_PARAMS),
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {}}}},
        }
    }
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics.", "responses": {"200": {"description": "text"}}}}
    paths["/healthz"] = {
        "get": {"summary": "Liveness and store reachability (no token needed).", "responses": {"200": {}, "503": {}}}
    }
    if otlp:
        for kind in ("traces", "logs"):
            paths[f"{OTLP_MOUNT}/{kind}"] = {"post": {"summary": f"OTLP/HTTP {kind} receiver.", "responses": {}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "magsag data serve", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def create_app(
    settings: StorageSettings,
    config: ServeConfig | None = None,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> Starlette:
    """The app; the store opens when the app starts (ASGI lifespan) and closes when it stops."""
    config = config or ServeConfig()
    instrument.enable()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from magsag.storage import get_storage_backend

        storage = await get_storage_backend(settings)
        app.state.storage = storage
        app.state.live_metrics = LiveMetrics(
            storage,
            settings,
            window_s=config.window_s,
            ttl_s=config.metrics_ttl_s,
            slow_ttl_s=max(config.metrics_ttl_s, 60.0),
            clickhouse=config.clickhouse,
            hot_size_limit_bytes=config.hot_size_limit_bytes,
            clock=clock,
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(app.state.live_metrics)
        registry.register(instrument.REGISTRY)  # type: ignore[arg-type]
        app.state.registry = registry
        try:
            yield
        finally:
            await storage.close()

    async def metrics(request: Request) -> Response:
        await request.app.state.live_metrics.refresh()
        body = await asyncio.to_thread(generate_latest, request.app.state.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        storage = request.app.state.storage
        try:
            await asyncio.wait_for(storage.list_runs(limit=1), 5)
        except Exception as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return JSONResponse({"status": "unavailable", "error": redact_dsn(text)}, status_code=503)
        return JSONResponse({"status": "ok", "backend": storage.name, "version": __version__})

    receiver = otlp_app(lambda: app.state.storage)
    schema = openapi_schema(receiver is not None)

    async def openapi(request: Request) -> Response:
        return JSONResponse(schema)

    routes: list[BaseRoute] = [Route(ep.path, json_route(ep), methods=["GET"]) for ep in ENDPOINTS]
    routes += [
        Route("/api/stream", stream, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    if receiver is not None:
        routes.append(Mount(OTLP_MOUNT, app=receiver))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.config = config
    app.state.stream_stats = StreamStats()
    app.add_middleware(AccessMiddleware, config=config)
    return app


def describe_store(settings: StorageSettings) -> str:
    """The store as a start-up line may name it (never a password)."""
    from magsag.lakehouse.settings import backend_from_settings

    try:
        where = getattr(backend_from_settings(settings), "where", "")
    except Exception:
        return str(settings.backend)
    return f"{settings.backend} {where}".strip()


def serve_forever(settings: StorageSettings, config: ServeConfig) -> None:
    """Run the app under uvicorn until SIGINT/SIGTERM (uvicorn's graceful shutdown)."""
    import uvicorn

    app = create_app(settings, config)
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        lifespan="on",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(uv)
    log.warning(
        "magsag serve: %s on http://%s:%s (%s, token %s)",
        describe_store(settings),
        config.host,
        config.port,
        "read-only" if config.read_only else "writes allowed",
        "required" if config.token else "not set",
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn handles SIGINT/SIGTERM itself
        server.run()
    if not server.started:
        raise SystemExit(1)  # could not bind or start (uvicorn said why)
