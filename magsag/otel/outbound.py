"""Store -> OTLP: one run with its events becomes spans (see :mod:`magsag.otel.mapping`).

:func:`build_run` is pure: it takes a run record, its events (as the storage API returns
them) and the ids of its place in the trace, and returns protobuf ``Span`` objects. Which
runs to export and how they are sent lives in :mod:`magsag.otel.export`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from magsag.backends.schema import DELEGATION, MCP_CALL, METRIC, coerce_datetime, to_us
from magsag.otel import ids
from magsag.otel import mapping as m

_ERROR_STATUSES = frozenset({"error", "failed", "failure", "timeout"})


def us(value: Any) -> int:
    """An API timestamp (ISO text or datetime) -> integer µs."""
    if isinstance(value, int):
        return value
    dt = value if isinstance(value, datetime) else coerce_datetime(value, "timestamp")
    return to_us(dt)  # type: ignore[arg-type]


# ------------------------------------------------------------------ attribute values


def any_value(value: Any) -> common_pb2.AnyValue:
    v = common_pb2.AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            v.int_value = value
        else:
            v.string_value = str(value)
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, str):
        v.string_value = value
    elif isinstance(value, (list, tuple)):
        v.array_value.values.extend(any_value(x) for x in value)
    elif isinstance(value, Mapping):
        v.kvlist_value.values.extend(common_pb2.KeyValue(key=str(k), value=any_value(x)) for k, x in value.items())
    elif value is not None:
        v.string_value = str(value)
    return v


def key_values(attrs: Mapping[str, Any]) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=any_value(v)) for k, v in attrs.items() if v is not None]


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# ------------------------------------------------------------------ the run's place


def span_record(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The OTel span an event holds (written by the receiver), or None."""
    payload = event.get("payload")
    if isinstance(payload, Mapping):
        block = payload.get(m.OTEL_KEY)
        if isinstance(block, Mapping) and "kind" in block and ids.is_span_id(event.get("span_id")):
            return dict(block)
    return None


@dataclass
class RunPlace:
    """Where a run sits: its span id and what the events say about its trace."""

    span_id: str
    trace_id: str | None = None  # kept from the receiver, else None (derived from the root run)
    parent_span_id: str | None = None  # kept from the receiver
    record: dict[str, Any] | None = None  # the receiver's record of the run span
    record_event_id: str | None = None


def run_place(run: Mapping[str, Any], events: list[dict[str, Any]]) -> RunPlace:
    for e in events:
        rec = span_record(e)
        if rec is not None and rec.get("run"):
            return RunPlace(
                e["span_id"],
                rec.get("trace_id") if ids.is_trace_id(rec.get("trace_id")) else None,
                e.get("parent_span_id") if ids.is_span_id(e.get("parent_span_id")) else None,
                rec,
                e["event_id"],
            )
    for e in events:  # an agent that wrote real OTel ids on its events
        if e.get("type") not in (MCP_CALL, METRIC) and e.get("span_id") is not None:
            if ids.is_span_id(e["span_id"]):
                return RunPlace(e["span_id"])
            break
    return RunPlace(ids.run_span_id(run["run_id"]))


def is_delegation_start(event: Mapping[str, Any]) -> bool:
    if event.get("type") != DELEGATION:
        return False
    p = event.get("payload") or {}
    return isinstance(p, Mapping) and (bool(p.get("run_id")) or bool(p.get("task_id") and p.get("sag")))


def delegation_spans(events: list[dict[str, Any]]) -> dict[str, str]:
    """Sub-run id -> the span id of the delegation that started it (for the sub-run's parent)."""
    out = {}
    for e in events:
        if is_delegation_start(e):
            child = (e.get("payload") or {}).get("run_id")
            if child and child not in out:
                out[child] = ids.event_span_id(e["event_id"])
    return out


# ------------------------------------------------------------------ building spans


@dataclass
class Built:
    spans: list[trace_pb2.Span] = field(default_factory=list)
    span_events: int = 0


def _status(code: int, message: str | None = None) -> trace_pb2.Status:
    return trace_pb2.Status(code=code, message=message or "") if code else trace_pb2.Status()


def _new_span(
    trace_id: str, span_id: str, parent: str | None, name: str, kind: int, start: int, end: int
) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        kind=kind,
        start_time_unix_nano=start * 1000,
        end_time_unix_nano=max(end, start) * 1000,
    )


def _payload_of(e: Mapping[str, Any]) -> dict[str, Any]:
    p = e.get("payload")
    return dict(p) if isinstance(p, Mapping) else {}


def _metric_attrs(name: str, value: Any, into: dict[str, Any]) -> None:
    if name in m.METRIC_SKIP or value is None:
        return
    if name == "model":
        if isinstance(value, str) and value and value != "unknown":
            for a in m.METRIC_ATTRIBUTES["model"]:
                into[a] = value
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for a in m.METRIC_ATTRIBUTES.get(name, (m.M_METRIC_PREFIX + name,)):
        into[a] = value


def _span_event(e: Mapping[str, Any]) -> trace_pb2.Span.Event:
    payload = _payload_of(e)
    block = payload.pop(m.OTEL_KEY, None)
    name = e.get("type") or "event"
    attrs: dict[str, Any] = {}
    if isinstance(block, Mapping) and isinstance(block.get("event"), Mapping):
        name = block["event"].get("name") or name
        attrs.update(block["event"].get("attributes") or {})
    attrs.update(
        {
            m.M_EVENT_ID: e.get("event_id"),
            m.M_LEVEL: e.get("level"),
            m.M_MESSAGE: e.get("msg"),
            m.M_PAYLOAD: json_text(payload) if payload else None,
            m.M_ARTIFACT: e.get("artifact_uri"),
            m.M_CONTRACT_ID: e.get("contract_id"),
            m.M_CONTRACT_VERSION: e.get("contract_version"),
        }
    )
    return trace_pb2.Span.Event(time_unix_nano=us(e["ts"]) * 1000, name=name, attributes=key_values(attrs))


def _recorded_span(e: Mapping[str, Any], rec: Mapping[str, Any], trace_id: str, fallback_parent: str) -> trace_pb2.Span:
    start = us(e["ts"])
    end = int(rec.get("end_us") or start)
    parent = e.get("parent_span_id") if ids.is_span_id(e.get("parent_span_id")) else fallback_parent
    span = _new_span(
        trace_id, e["span_id"], parent, rec.get("name") or e.get("msg") or "span", int(rec.get("kind") or 1), start, end
    )
    span.attributes.extend(key_values(rec.get("attributes") or {}))
    span.status.CopyFrom(_status(int(rec.get("status_code") or 0), rec.get("status_message")))
    return span


def _mcp_span(e: Mapping[str, Any], trace_id: str, span_id: str, parent: str) -> trace_pb2.Span:
    p = _payload_of(e)
    start = us(e["ts"])
    latency = p.get("latency_ms")
    dur = round(float(latency) * 1000) if isinstance(latency, (int, float)) and not isinstance(latency, bool) else 0
    tool = str(p.get("tool") or "unknown")
    span = _new_span(trace_id, span_id, parent, m.MCP_SPAN_NAME.format(tool=tool), m.KIND_CLIENT, start, start + dur)
    args = p.get("arguments")
    failed = str(p.get("status") or "").lower() in _ERROR_STATUSES or e.get("level") in ("error", "critical")
    transport = p.get("transport")
    attrs = {
        m.MCP_METHOD: m.MCP_TOOLS_CALL,
        m.GEN_AI_OPERATION: "execute_tool",
        m.GEN_AI_TOOL_NAME: tool,
        m.OI_TOOL_NAME: tool,
        m.OI_SPAN_KIND: "TOOL",
        m.M_SERVER_ID: p.get("server_id"),
        m.NETWORK_TRANSPORT: m.TRANSPORT_OUT.get(str(transport).lower(), transport) if transport else None,
        m.GEN_AI_TOOL_ARGS: json_text(args) if args is not None else None,
        m.OI_TOOL_PARAMETERS: json_text(args) if args is not None else None,
        m.M_LATENCY: latency if isinstance(latency, (int, float)) else None,
        m.ERROR_TYPE: (p.get("error_type") or "tool_error") if failed else None,
        m.M_EVENT_ID: e.get("event_id"),
        m.M_LEVEL: e.get("level"),
        m.M_MESSAGE: e.get("msg"),
    }
    span.attributes.extend(key_values(attrs))
    if failed:
        span.status.CopyFrom(_status(m.STATUS_ERROR, str(p.get("error") or e.get("msg") or "tool call failed")))
    else:
        span.status.CopyFrom(_status(m.STATUS_OK))
    return span


def _error_message(events: Iterable[Mapping[str, Any]]) -> str:
    msg = None
    for e in events:
        if e.get("level") in ("error", "critical"):
            p = e.get("payload") or {}
            err = p.get("error") if isinstance(p, Mapping) else None
            msg = err if isinstance(err, str) and err else e.get("msg")
    return msg or "run failed"


def build_run(
    run: Mapping[str, Any],
    events: list[dict[str, Any]],
    trace_id: str,
    place: RunPlace,
    parent_span_id: str | None,
    sub_runs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Built:
    """The spans of one finished run: its own span, its tool and delegation spans.

    ``sub_runs`` (run id -> run record) gives delegation spans their end when the closing
    event is missing.
    """
    out = Built()
    run_span = place.span_id
    span_map: dict[str, str] = {}  # a span id as stored -> the exported span id
    children: list[trace_pb2.Span] = []
    run_attrs: dict[str, Any] = {}
    span_events: list[tuple[str, trace_pb2.Span.Event]] = []
    open_delegations: dict[str, trace_pb2.Span] = {}
    cost_tokens: dict[str, float] = {}
    # First pass: every event that is a span claims its id, so parents resolve in any order.
    for e in events:
        sid = e.get("span_id")
        if e["event_id"] == place.record_event_id:
            continue
        if span_record(e) is not None:
            span_map[sid] = sid  # type: ignore[index]
        elif e.get("type") == MCP_CALL:
            span_map[sid or e["event_id"]] = ids.keep_or_derive_span(sid, e["event_id"])
    for e in events:
        if e["event_id"] == place.record_event_id:
            continue
        etype = e.get("type")
        rec = span_record(e)
        if rec is not None:
            children.append(_recorded_span(e, rec, trace_id, run_span))
            continue
        if etype == MCP_CALL:
            sid = e.get("span_id") or e["event_id"]
            parent = span_map.get(e.get("parent_span_id") or "", run_span)
            children.append(_mcp_span(e, trace_id, span_map[sid], parent if parent != span_map[sid] else run_span))
            continue
        if etype == METRIC:
            p = _payload_of(e)
            name = p.get("name")
            if isinstance(name, str) and name:
                _metric_attrs(name, p.get("value"), run_attrs)
                if p.get("model") is not None:
                    _metric_attrs("model", p["model"], run_attrs)
            continue
        if etype == "cost":
            p = _payload_of(e)
            for k in ("input_tokens", "output_tokens"):
                if isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool):
                    cost_tokens[k] = cost_tokens.get(k, 0) + p[k]
            if p.get("model") is not None:
                _metric_attrs("model", p["model"], cost_tokens)  # type: ignore[arg-type]
        if etype == DELEGATION:
            p = _payload_of(e)
            task = p.get("task_id")
            if is_delegation_start(e):
                sid = ids.event_span_id(e["event_id"])
                agent = p.get("sag") or "sub-agent"
                start = us(e["ts"])
                span = _new_span(
                    trace_id,
                    sid,
                    run_span,
                    m.DELEGATION_SPAN_NAME.format(task_id=task or "task", agent=agent),
                    m.KIND_INTERNAL,
                    start,
                    start,
                )
                span.attributes.extend(
                    key_values(
                        {
                            m.OI_SPAN_KIND: "CHAIN",
                            m.M_TASK_ID: task,
                            m.M_DELEGATE: p.get("sag"),
                            m.M_DELEGATE_RUN: p.get("run_id"),
                            m.M_EVENT_ID: e["event_id"],
                            m.M_MESSAGE: e.get("msg"),
                        }
                    )
                )
                child = (sub_runs or {}).get(p.get("run_id") or "")
                if child is not None and child.get("ended_at"):
                    span.end_time_unix_nano = max(us(child["ended_at"]), start) * 1000
                children.append(span)
                open_delegations[str(task or p.get("run_id"))] = span
                continue
            span = open_delegations.pop(str(task), None) if task is not None else None
            if span is not None:
                span.end_time_unix_nano = max(us(e["ts"]) * 1000, span.start_time_unix_nano)
                failed = e.get("level") in ("error", "critical") or bool(p.get("error"))
                if failed:
                    span.status.CopyFrom(_status(m.STATUS_ERROR, str(p.get("error") or e.get("msg") or "failed")))
                else:
                    span.status.CopyFrom(_status(m.STATUS_OK))
                span_events.append((span.span_id.hex(), _span_event(e)))
                continue
        target = span_map.get(e.get("span_id") or "", run_span)
        span_events.append((target, _span_event(e)))
    # The run's own span.
    metrics = run.get("metrics") or {}
    run_level: dict[str, Any] = {}
    if isinstance(metrics, Mapping):
        for k, v in metrics.items():
            _metric_attrs(k, v, run_level)
    for k in ("input_tokens", "output_tokens"):
        if k in cost_tokens:
            _metric_attrs(k, cost_tokens[k], run_level)
    for k in m.METRIC_ATTRIBUTES["model"]:
        if k in cost_tokens:
            run_level[k] = cost_tokens[k]
    run_level.update(run_attrs)  # metric events win over the run's summary
    start, end = us(run["started_at"]), us(run["ended_at"])
    status = run.get("status")
    rec = place.record
    if rec is not None:
        span = _new_span(
            trace_id, run_span, parent_span_id, rec.get("name") or "run", int(rec.get("kind") or 1), start, end
        )
        attrs = dict(rec.get("attributes") or {})
    else:
        name = m.RUN_SPAN_NAME.format(agent_slug=run["agent_slug"])
        span = _new_span(trace_id, run_span, parent_span_id, name, m.KIND_INTERNAL, start, end)
        attrs = {m.OI_SPAN_KIND: "AGENT", m.GEN_AI_OPERATION: "invoke_agent", m.GEN_AI_AGENT_NAME: run["agent_slug"]}
        attrs.update(run_level)
        if run.get("tags"):
            attrs[m.OI_TAGS] = list(run["tags"])
    attrs.setdefault(m.M_RUN_ID, run["run_id"])
    if run.get("parent_run_id"):
        attrs.setdefault(m.M_PARENT_RUN_ID, run["parent_run_id"])
    attrs.setdefault(m.M_STATUS, status)
    span.attributes.extend(key_values(attrs))
    code = m.RUN_STATUS_OUT.get(str(status), m.STATUS_UNSET)
    if rec is not None and int(rec.get("status_code") or 0):
        span.status.CopyFrom(_status(int(rec["status_code"]), rec.get("status_message")))
    else:
        span.status.CopyFrom(_status(code, _error_message(events) if code == m.STATUS_ERROR else None))
    by_id = {span.span_id.hex(): span, **{c.span_id.hex(): c for c in children}}
    for target, ev in span_events:
        by_id.get(target, span).events.append(ev)
    out.span_events = len(span_events)
    out.spans = [span, *children]
    return out
