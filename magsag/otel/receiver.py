"""The OTLP/HTTP receiver: ``POST /v1/traces`` and ``POST /v1/logs`` into the store.

``create_app(get_storage)`` is the sub-application ``magsag data serve`` mounts at ``/v1``
(its routes are ``POST /traces`` and ``POST /logs``; serve checks the token and its
read-only switch first); ``routes(...)`` are the same routes for any Starlette app; ``app()``
is a standalone receiver that opens the configured store itself.
Bodies are protobuf (``application/x-protobuf``) or JSON (``application/json``), plain or
gzip; the reply uses the request's encoding. A body that cannot be decoded gets HTTP 400
with a one-line reason and writes nothing; spans or records that cannot be stored are
left out and reported through OTLP's ``partial_success``.
"""

from __future__ import annotations

import hmac
import os
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from magsag.backends.base import StorageBackend
from magsag.backends.errors import ConfigError, StorageError
from magsag.otel.inbound import MalformedRequest, Mapped, decode_logs, decode_traces, map_logs, map_traces

DEFAULT_MAX_BODY = 16 * 1024 * 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

StorageGetter = Callable[[], StorageBackend | Awaitable[StorageBackend]]


class _TooLarge(Exception):
    pass


def settings_from_env() -> tuple[str | None, int]:
    """``MAGSAG_SERVE_TOKEN`` and ``MAGSAG_OTEL_MAX_BODY_BYTES`` (checked, one-line errors)."""
    token = os.environ.get("MAGSAG_SERVE_TOKEN") or None
    raw = os.environ.get("MAGSAG_OTEL_MAX_BODY_BYTES")
    if raw is None or not raw.strip():
        return token, DEFAULT_MAX_BODY
    try:
        limit = int(raw)
    except ValueError:
        raise ConfigError(f"MAGSAG_OTEL_MAX_BODY_BYTES: {raw!r} is not a whole number of bytes") from None
    if limit < 1024:
        raise ConfigError("MAGSAG_OTEL_MAX_BODY_BYTES: must be at least 1024")
    return token, limit


def _fail(status: int, reason: str) -> Response:
    return PlainTextResponse(reason.splitlines()[0][:300] + "\n", status_code=status)


def authorized(request: Request, token: str | None) -> bool:
    if not token:
        return True
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, inflated when gzip, never more than ``limit`` bytes either way."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise _TooLarge
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise _TooLarge
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise MalformedRequest(f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"malformed gzip body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _TooLarge
    if not inflater.eof:
        raise MalformedRequest("malformed gzip body: truncated")
    return out


def _encoding(request: Request) -> bool | None:
    """True for JSON, False for protobuf, None for anything else."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == PROTOBUF or ctype == "application/protobuf":
        return False
    if ctype == JSON:
        return True
    return None


def _reply(resp: Any, mapped: Mapped, json_body: bool, signal: str) -> Response:
    if mapped.rejected:
        ps = resp.partial_success
        if signal == "traces":
            ps.rejected_spans = mapped.rejected
        else:
            ps.rejected_log_records = mapped.rejected
        ps.error_message = mapped.error_message[:1000]
    if json_body:
        return Response(json_format.MessageToJson(resp, indent=None), media_type=JSON)
    return Response(resp.SerializeToString(), media_type=PROTOBUF)


def routes(
    get_storage: StorageGetter,
    *,
    token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    prefix: str = "/v1",
) -> list[Route]:
    """``POST {prefix}/traces`` and ``POST {prefix}/logs`` writing into ``get_storage()``."""

    async def storage() -> StorageBackend:
        got = get_storage()
        return await got if isinstance(got, Awaitable) else got  # type: ignore[return-value]

    async def handle(request: Request, signal: str) -> Response:
        if not authorized(request, token):
            return Response("missing or wrong bearer token\n", 401, {"WWW-Authenticate": "Bearer"})
        json_body = _encoding(request)
        if json_body is None:
            return _fail(415, f"unsupported Content-Type; send {PROTOBUF} or {JSON}")
        try:
            body = await read_body(request, max_body)
            if signal == "traces":
                mapped = map_traces(decode_traces(body, json_body))
                resp: Any = trace_service_pb2.ExportTraceServiceResponse()
            else:
                mapped = map_logs(decode_logs(body, json_body))
                resp = logs_service_pb2.ExportLogsServiceResponse()
        except _TooLarge:
            return _fail(413, f"body larger than {max_body} bytes (MAGSAG_OTEL_MAX_BODY_BYTES)")
        except MalformedRequest as exc:
            return _fail(400, str(exc))
        try:
            store = await storage()
            if mapped.events:
                await store.append_events(mapped.events)
            if mapped.runs:
                await store.upsert_runs(mapped.runs)
        except StorageError as exc:
            return _fail(503, f"store unavailable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return _reply(resp, mapped, json_body, signal)

    async def traces(request: Request) -> Response:
        return await handle(request, "traces")

    async def logs(request: Request) -> Response:
        return await handle(request, "logs")

    return [
        Route(f"{prefix}/traces", traces, methods=["POST"]),
        Route(f"{prefix}/logs", logs, methods=["POST"]),
    ]


def create_app(get_storage: StorageGetter, *, token: str | None = None, max_body: int | None = None) -> Starlette:
    """The receiver as a sub-application (``POST /traces``, ``POST /logs``) over a store the
    host application owns (``magsag data serve`` mounts it at ``/v1`` and checks the token
    itself); the body limit defaults to ``MAGSAG_OTEL_MAX_BODY_BYTES``."""
    limit = max_body or settings_from_env()[1]
    return Starlette(routes=routes(get_storage, token=token, max_body=limit, prefix=""))


def app(storage: StorageBackend | None = None, *, token: str | None = None, max_body: int | None = None) -> Starlette:
    """A standalone receiver. Without ``storage`` it opens the configured store at start-up
    and closes it at shutdown. ``token``/``max_body`` default to the environment."""
    env_token, env_limit = settings_from_env()
    holder: dict[str, StorageBackend] = {}
    if storage is not None:
        holder["s"] = storage

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if storage is not None:
            yield
            return
        from magsag.storage import get_storage_backend

        holder["s"] = await get_storage_backend()
        try:
            yield
        finally:
            await holder.pop("s").close()

    return Starlette(
        routes=routes(
            lambda: holder["s"], token=token if token is not None else env_token, max_body=max_body or env_limit
        ),
        lifespan=lifespan,
    )
