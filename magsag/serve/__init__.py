"""``magsag data serve``: the store over HTTP (JSON API, Server-Sent Events, Prometheus metrics).

**Why Starlette on uvicorn.** The server is a thin layer over the library (every endpoint
calls one ``magsag.storage`` method, like the CLI), so it needs routing, streaming
responses and a lifespan, and little else. Starlette gives exactly that with two small
pure-Python dependencies (``starlette``, ``anyio``) and mounts other ASGI apps as they
are, which is how the OpenTelemetry receiver (``magsag.otel.receiver``) joins at
``/v1``. FastAPI would add request-model validation and a generated OpenAPI document,
but on top of Starlette and with its own dependency-injection layer; here one table of
parameters (:mod:`magsag.serve.params`) already drives parsing, the 400 messages and the
OpenAPI schema, so FastAPI would add weight, not capability. uvicorn (with ``h11``, no
compiled extras) is the reference ASGI server: flow control on slow clients (what bounds
the SSE buffers), graceful shutdown on SIGTERM, and an access log without headers
(tokens never reach it). granian is faster on paper but a compiled Rust wheel; this
server's cost is the store's queries, not HTTP parsing. SSE is written here (a few lines
over ``StreamingResponse``) rather than taken from ``sse-starlette``, so the bounded
queue and the keep-alive are visible in one place.

Modules: :mod:`~magsag.serve.app` (app, access rules, OTLP mount point, uvicorn),
:mod:`~magsag.serve.api` (JSON endpoints), :mod:`~magsag.serve.params` (parameters),
:mod:`~magsag.serve.sse` (the stream), :mod:`~magsag.serve.tree` (delegation trees),
:mod:`~magsag.serve.metrics` and :mod:`~magsag.serve.activity` (``/metrics``),
:mod:`~magsag.serve.instrument` (append counters), :mod:`~magsag.serve.tier_metrics`
(the tiering job's metrics and textfile).

Needs the ``serve`` extra: ``pip install 'magsag-storage[serve]'``.
"""

from __future__ import annotations

from magsag.serve.app import OTLP_MOUNT, ServeConfig, create_app, serve_forever

__all__ = ["OTLP_MOUNT", "ServeConfig", "create_app", "serve_forever"]
