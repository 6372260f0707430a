"""``/api/stream``: ``stream_events`` as Server-Sent Events, resumable with ``Last-Event-ID``.

Each event is sent as ``id: <cursor>``, ``event: event``, ``data: <the event as JSON>``.
A browser's ``EventSource`` (or any client) that reconnects sends the last id it got as
``Last-Event-ID`` and the stream resumes exactly after it (the ``cursor`` parameter does
the same for clients that cannot set headers). A comment line every
:data:`KEEPALIVE_S` seconds keeps idle connections through proxies.

**Bounded memory.** A task reads the store's stream into a queue of at most
:data:`QUEUE_EVENTS` events; the response takes from it and awaits each write to the
socket, and uvicorn's flow control makes that write wait while the client's TCP window
is full. A client that does not read therefore stops its own producer once the socket
buffers and the queue are full (plus one page of the store read, 1000 events): the
server never buffers more than that per connection. At most ``max_streams`` clients
stream at once (503 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from magsag.serve.api import JSONResponse, error_response
from magsag.serve.params import Param, parse

KEEPALIVE_S = 15.0
QUEUE_EVENTS = 256

STREAM_PARAMS = (
    Param("run_id", "string", "Only this run's events."),
    Param("agent", "string", "Only this agent slug."),
    Param("type", "string", "Only events of this type."),
    Param("level", "string", "Only events of this level."),
    Param("since", "datetime", "Replay stored events from this time first (hot store), then follow."),
    Param("cursor", "string", "Resume after this cursor (the `id` of an event; Last-Event-ID wins)."),
)


class StreamStats:
    """What the SSE endpoint is doing (tests read it to prove the bound)."""

    def __init__(self) -> None:
        self.active = 0
        self.read = 0  # events taken from the store by all producers
        self.sent = 0  # events written to clients


def sse_frame(event: dict[str, Any]) -> bytes:
    return b"id: " + event["cursor"].encode() + b"\nevent: event\ndata: " + orjson.dumps(event) + b"\n\n"


async def stream(request: Request) -> Response:
    state = request.app.state
    try:
        args = parse(request.query_params, STREAM_PARAMS)
        cursor = request.headers.get("last-event-id") or args["cursor"]
        events = state.storage.stream_events(
            run_id=args["run_id"],
            agent_slug=args["agent"],
            event_type=args["type"],
            level=args["level"],
            since=args["since"],
            cursor=cursor or None,
        )
    except Exception as exc:
        return error_response(exc)
    stats: StreamStats = state.stream_stats
    if stats.active >= state.config.max_streams:
        await events.aclose()
        return JSONResponse({"error": f"too many streams (at most {state.config.max_streams})"}, status_code=503)
    stats.active += 1
    return StreamingResponse(
        _frames(events, stats),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _frames(events: AsyncIterator[dict[str, Any]], stats: StreamStats) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue(QUEUE_EVENTS)

    async def produce() -> None:
        try:
            async for e in events:
                stats.read += 1
                await queue.put(e)
        except Exception as exc:  # the store went away: tell the client, then end
            await queue.put(exc)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    producer = asyncio.create_task(produce())
    try:
        yield b": magsag event stream\n\n"
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if isinstance(item, BaseException):
                body = error_response(item).body
                yield b"event: error\ndata: " + bytes(body) + b"\n\n"
                return
            stats.sent += 1
            yield sse_frame(item)
    finally:
        stats.active -= 1
        producer.cancel()
        with contextlib.suppress(BaseException):
            await producer
