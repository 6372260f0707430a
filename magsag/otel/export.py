"""``export_otel``: finished runs of every tier as OTLP traces, in batches.

Runs are read in (``ended_at``, ``run_id``) order (:mod:`magsag.otel.select`), each batch
becomes one ``ExportTraceServiceRequest`` and is sent by :class:`~magsag.otel.transport.OtlpHttp`.
With a ``destination`` (the continuous mode), the batch's last key is saved as the
watermark after the endpoint accepted it, and the next call starts after it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from magsag import __version__
from magsag.backends.base import StorageBackend
from magsag.otel import ids, watermark
from magsag.otel import mapping as m
from magsag.otel.outbound import RunPlace, build_run, delegation_spans, key_values, run_place
from magsag.otel.select import START, Key, Selection, count_running, finished_runs, key_of
from magsag.otel.transport import OtlpHttp, shown

SCOPE = "magsag.otel"


@dataclass
class ExportReport:
    endpoint: str
    project: str
    runs: int = 0
    spans: int = 0
    events: int = 0
    bytes: int = 0
    batches: int = 0
    seconds: float = 0.0
    rejected_spans: int = 0
    waiting_running: int = 0
    stopped: bool = False
    watermark: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


class ExportProgress:
    """Hooks the CLI's progress bar implements; the default does nothing."""

    def total(self, runs: int | None) -> None: ...

    def batch(self, runs: int, spans: int, sent_bytes: int) -> None: ...


class _Runs:
    """Run records and events read once per export (parents and sub-runs are shared)."""

    def __init__(self, storage: StorageBackend):
        self.storage = storage
        self.runs: dict[str, dict[str, Any] | None] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.places: dict[str, RunPlace] = {}

    async def run(self, run_id: str) -> dict[str, Any] | None:
        if run_id not in self.runs:
            self.runs[run_id] = await self.storage.get_run(run_id)
        return self.runs[run_id]

    async def events_of(self, run_id: str) -> list[dict[str, Any]]:
        if run_id not in self.events:
            self.events[run_id] = [e async for e in self.storage.get_events(run_id)]
        return self.events[run_id]

    async def place(self, run: dict[str, Any]) -> RunPlace:
        rid = run["run_id"]
        if rid not in self.places:
            self.places[rid] = run_place(run, await self.events_of(rid))
        return self.places[rid]

    async def trace_id(self, run: dict[str, Any]) -> str:
        """The kept trace id of the run or an ancestor, else derived from the root run's id."""
        seen: set[str] = set()
        cur: dict[str, Any] | None = run
        root = run["run_id"]
        while cur is not None and cur["run_id"] not in seen:
            seen.add(cur["run_id"])
            place = await self.place(cur)
            if place.trace_id:
                return place.trace_id
            root = cur["run_id"]
            parent = cur.get("parent_run_id")
            cur = await self.run(parent) if parent else None
            if parent and cur is None:
                root = parent  # the parent is gone: its id still names the trace
        return ids.trace_id_for_run(root)

    async def parent_span(self, run: dict[str, Any], place: RunPlace) -> str | None:
        if place.parent_span_id:
            return place.parent_span_id
        parent_id = run.get("parent_run_id")
        if not parent_id:
            return None
        parent = await self.run(parent_id)
        if parent is None:
            return ids.run_span_id(parent_id)
        pevents = await self.events_of(parent_id)
        via = delegation_spans(pevents).get(run["run_id"])
        return via or (await self.place(parent)).span_id

    def forget(self, keep: set[str]) -> None:
        """Drop cached runs not needed any more (memory stays bounded on long exports)."""
        for d in (self.runs, self.events, self.places):
            for k in [k for k in d if k not in keep]:
                del d[k]


def resource(project: str) -> Any:
    from opentelemetry.proto.resource.v1 import resource_pb2

    return resource_pb2.Resource(
        attributes=key_values({m.SERVICE_NAME: "magsag", m.OI_PROJECT: project, "magsag.version": __version__})
    )


async def build_batch(cache: _Runs, runs: list[dict[str, Any]]) -> tuple[list[trace_pb2.Span], int]:
    spans: list[trace_pb2.Span] = []
    n_events = 0
    for run in runs:
        events = await cache.events_of(run["run_id"])
        place = await cache.place(run)
        trace_id = await cache.trace_id(run)
        parent = await cache.parent_span(run, place)
        subs: dict[str, dict[str, Any]] = {}
        for child in delegation_spans(events):
            rec = await cache.run(child)
            if rec is not None:
                subs[child] = rec
        built = build_run(run, events, trace_id, place, parent, subs)
        spans.extend(built.spans)
        n_events += built.span_events
    return spans, n_events


def request_bytes(spans: list[trace_pb2.Span], project: str) -> bytes:
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.CopyFrom(resource(project))
    ss = rs.scope_spans.add()
    ss.scope.CopyFrom(common_pb2.InstrumentationScope(name=SCOPE, version=__version__))
    ss.spans.extend(spans)
    return req.SerializeToString()


async def export_otel(
    storage: StorageBackend,
    endpoint: str,
    *,
    headers: dict[str, str] | None = None,
    selection: Selection | None = None,
    project: str = "magsag",
    batch_runs: int = 200,
    continuous: bool = False,
    timeout: float = 10.0,
    retries: int = 5,
    backoff: float = 0.5,
    progress: ExportProgress | None = None,
    stop: threading.Event | None = None,
    sender: Callable[[bytes], tuple[bytes, int]] | None = None,
) -> ExportReport:
    """Export the selected finished runs to ``endpoint`` (OTLP/HTTP); return the report.

    ``continuous=True`` starts after the destination's watermark (kept in the hot store)
    and moves it after each accepted batch. ``stop`` (set by SIGTERM in the CLI) ends the
    export between batches. An endpoint that refuses or cannot be reached raises
    :class:`~magsag.backends.errors.BackendUnavailable`; the watermark then stays at the
    last accepted batch.
    """
    from magsag.otel.transport import signal_url

    sel = selection or Selection()
    url = signal_url(endpoint)
    report = ExportReport(endpoint=shown(url), project=project)
    progress = progress or ExportProgress()
    dest = watermark.destination_key(url, project)
    after: Key = START
    done_before = 0
    if continuous:
        after, done_before = await watermark.read(storage, dest)
    client = None
    if sender is None:
        client = OtlpHttp(url, headers or {}, timeout=timeout, retries=retries, backoff=backoff)
        sender = client.post
    cache = _Runs(storage)
    t0 = time.perf_counter()
    try:
        report.waiting_running = await count_running(storage, sel)
        progress.total(None)
        while True:
            if stop is not None and stop.is_set():
                report.stopped = True
                break
            runs = await finished_runs(storage, sel, after, batch_runs)
            if not runs:
                break
            for r in runs:
                cache.runs[r["run_id"]] = r
            spans, n_events = await build_batch(cache, runs)
            body = request_bytes(spans, project)
            reply, sent = await asyncio.to_thread(sender, body)
            rejected = _rejected(reply)
            if rejected:
                report.rejected_spans += rejected[0]
                if rejected[1]:
                    report.messages.append(rejected[1])
            after = key_of(runs[-1])
            report.runs += len(runs)
            report.spans += len(spans)
            report.events += n_events
            report.bytes += sent
            report.batches += 1
            if continuous:
                await watermark.save(storage, dest, after, done_before + report.runs)
            progress.batch(len(runs), len(spans), sent)
            cache.forget({r["parent_run_id"] for r in runs if r.get("parent_run_id")})
    finally:
        if client is not None:
            client.close()
        report.seconds = time.perf_counter() - t0
    if continuous:
        from magsag.backends.schema import iso_from_us

        report.watermark = {"ended_at": iso_from_us(after[0]) if after != START else None, "run_id": after[1] or None}
    return report


def _rejected(reply: bytes) -> tuple[int, str] | None:
    if not reply:
        return None
    try:
        resp = trace_service_pb2.ExportTraceServiceResponse.FromString(reply)
    except Exception:
        return None  # a JSON or empty reply from a proxy: nothing to read
    if resp.HasField("partial_success") and resp.partial_success.rejected_spans:
        return resp.partial_success.rejected_spans, resp.partial_success.error_message
    return None
