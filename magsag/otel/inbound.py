"""OTLP -> store: spans and log records become runs and events (see :mod:`magsag.otel.mapping`).

Pure functions over decoded OTLP requests; the HTTP side is :mod:`magsag.otel.receiver`.
A span or record that cannot be stored (bad ids, text the store refuses) is rejected on
its own and counted for the OTLP partial-success reply; the rest of the request is kept.
Event ids are derived from the trace and span ids, so a resent request adds nothing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from magsag.backends.errors import ValidationError
from magsag.backends.schema import (
    LOG,
    MAX_ID_LEN,
    MCP_CALL,
    METRIC,
    RUN_STATUSES,
    Event,
    Run,
    _format_uuid,
    _uuid7_int,
    derived_event_id,
)
from magsag.otel import mapping as m


class MalformedRequest(ValueError):
    """A body that is not an OTLP request in the encoding it claims (HTTP 400)."""


@dataclass
class Mapped:
    """What one request writes, and what it refused."""

    events: list[Event] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5:
            self.errors.append(reason)

    @property
    def error_message(self) -> str:
        return "; ".join(self.errors)


# ------------------------------------------------------------------ decoding

_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON writes ids as hex; protobuf's JSON parser expects base64 for bytes."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _ID_KEYS and isinstance(v, str):
                try:
                    node[k] = base64.b64encode(bytes.fromhex(v)).decode() if v else ""
                except ValueError:
                    raise MalformedRequest(f"{k} {v[:40]!r} is not hex") from None
            else:
                _hex_ids_to_base64(v)
    elif isinstance(node, list):
        for v in node:
            _hex_ids_to_base64(v)


def decode(body: bytes, json_body: bool, cls: type[Message]) -> Any:
    msg = cls()
    if json_body:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedRequest(f"malformed JSON body: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise MalformedRequest("malformed JSON body: the top level is not an object")
        _hex_ids_to_base64(data)
        try:
            json_format.ParseDict(data, msg, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError) as exc:
            raise MalformedRequest(f"not an OTLP JSON request: {str(exc).splitlines()[0][:200]}") from None
        return msg
    try:
        msg.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise MalformedRequest(f"malformed protobuf body: {str(exc).splitlines()[0][:200] or 'cannot parse'}") from None
    return msg


def decode_traces(body: bytes, json_body: bool = False) -> trace_service_pb2.ExportTraceServiceRequest:
    return decode(body, json_body, trace_service_pb2.ExportTraceServiceRequest)


def decode_logs(body: bytes, json_body: bool = False) -> logs_service_pb2.ExportLogsServiceRequest:
    return decode(body, json_body, logs_service_pb2.ExportLogsServiceRequest)


# ------------------------------------------------------------------ values


def value_of(v: Any) -> Any:
    """An OTLP AnyValue -> a JSON value."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        d = v.double_value
        return d if d == d and d not in (float("inf"), float("-inf")) else str(d)
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def attrs_of(kvs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


def _first(attrs: Mapping[str, Any], names: Iterable[str]) -> Any:
    for n in names:
        v = attrs.get(n)
        if v not in (None, ""):
            return v
    return None


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _num(v: Any) -> float | int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        try:
            return float(v) if "." in v else int(v)
        except ValueError:
            return None
    return None


# ------------------------------------------------------------------ spans


@dataclass
class _Span:
    span: Any
    trace: str
    sid: str
    parent: str | None
    attrs: dict[str, Any]
    service: str | None
    run_id: str | None = None  # set for a run span
    owner: Any = False  # the nearest run span at or above (False: not worked out yet)
    agent: str | None = None  # a run span's agent, once worked out


def _kind_of(attrs: Mapping[str, Any]) -> str:
    oi = str(attrs.get(m.OI_SPAN_KIND) or "").upper()
    op = str(attrs.get(m.GEN_AI_OPERATION) or "").lower()
    if oi in m.TOOL_KINDS or op in m.TOOL_OPERATIONS or m.MCP_METHOD in attrs:
        return "tool"
    if oi in m.LLM_KINDS or op in m.LLM_OPERATIONS:
        return "llm"
    return "other"


def map_traces(req: trace_service_pb2.ExportTraceServiceRequest) -> Mapped:
    out = Mapped()
    spans: dict[tuple[str, str], _Span] = {}
    order: list[_Span] = []
    for rs in req.resource_spans:
        res = attrs_of(rs.resource.attributes)
        service = res.get(m.SERVICE_NAME) if isinstance(res.get(m.SERVICE_NAME), str) else None
        for ss in rs.scope_spans:
            for sp in ss.spans:
                if len(sp.trace_id) != 16 or not any(sp.trace_id):
                    out.reject(f"span {sp.name[:60]!r}: trace_id must be 16 bytes, not all zero")
                    continue
                if len(sp.span_id) != 8 or not any(sp.span_id):
                    out.reject(f"span {sp.name[:60]!r}: span_id must be 8 bytes, not all zero")
                    continue
                if sp.parent_span_id and len(sp.parent_span_id) != 8:
                    out.reject(f"span {sp.name[:60]!r}: parent_span_id must be 8 bytes")
                    continue
                attrs = attrs_of(sp.attributes)
                parent = sp.parent_span_id.hex() if sp.parent_span_id and any(sp.parent_span_id) else None
                s = _Span(sp, sp.trace_id.hex(), sp.span_id.hex(), parent, attrs, service)
                rid = attrs.get(m.M_RUN_ID)
                if isinstance(rid, str) and rid.strip():
                    s.run_id = rid.strip()
                elif parent is None:
                    s.run_id = m.RUN_ID_PREFIX + s.trace
                spans[(s.trace, s.sid)] = s
                order.append(s)

    def run_span_of(s: _Span) -> _Span | None:
        """The nearest run span at or above ``s`` within this request (remembered per span)."""
        if s.owner is not False:
            return s.owner  # type: ignore[no-any-return]
        path: list[_Span] = []
        cur: _Span | None = s
        found: _Span | None = None
        while cur is not None and len(path) < 1000:
            if cur.owner is not False:
                found = cur.owner
                break
            path.append(cur)
            if cur.run_id is not None:
                found = cur
                break
            cur = spans.get((cur.trace, cur.parent)) if cur.parent else None
        for p in path:
            p.owner = found
        return found

    for s in order:
        try:
            _map_span(s, run_span_of, spans, out)
        except ValidationError as exc:
            out.reject(f"span {s.span.name[:60]!r}: {exc}")
    return out


def span_event_id(ts_us: int, trace: str, span: str) -> str:
    """The event id of a span: UUIDv7-shaped, time bits from its start, the other 74 bits
    from its span id (64) and trace id (10). Span ids are random, so this needs no hash."""
    bits = (int(trace[-3:], 16) & 0x3FF) << 64 | int(span, 16)
    return _format_uuid(_uuid7_int(ts_us // 1000, bits >> 62, bits))


def _agent(attrs: Mapping[str, Any], service: str | None, fallback: str | None = None) -> str:
    a = _first(attrs, m.AGENT_NAME_ATTRS)
    return str(a) if a is not None else (fallback or service or "otel")


def _block(s: _Span, *, run: bool = False) -> dict[str, Any]:
    sp = s.span
    block: dict[str, Any] = {
        "trace_id": s.trace,
        "name": sp.name,
        "kind": int(sp.kind),
        "end_us": sp.end_time_unix_nano // 1000,
        "status_code": int(sp.status.code),
        "attributes": s.attrs,
    }
    if sp.status.message:
        block["status_message"] = sp.status.message
    if s.service:
        block["service"] = s.service
    if run:
        block["run"] = True
    return block


def _map_span(s: _Span, run_span_of: Any, spans: Mapping[tuple[str, str], _Span], out: Mapped) -> None:
    sp = s.span
    attrs = s.attrs
    start_us = sp.start_time_unix_nano // 1000
    end_us = max(sp.end_time_unix_nano // 1000, start_us)
    failed = sp.status.code == m.STATUS_ERROR
    owner = run_span_of(s)
    if s.run_id is not None:
        run_id, agent = s.run_id, _agent(attrs, s.service)
    elif owner is not None:
        if owner.agent is None:
            owner.agent = _agent(owner.attrs, owner.service)
        run_id, agent = owner.run_id, _agent(attrs, s.service, owner.agent)
    else:
        run_id, agent = m.RUN_ID_PREFIX + s.trace, _agent(attrs, s.service)
    eid = span_event_id(start_us, s.trace, s.sid)
    kind = _kind_of(attrs)
    if s.run_id is not None:
        out.runs.append(_run_of(s, owner_parent=run_span_of, spans=spans, agent=agent, start=start_us, end=end_us))
        payload = {m.OTEL_KEY: _block(s, run=True)}
        out.events.append(
            _event(run_id, agent, LOG, start_us, "error" if failed else "info", sp.name, payload, s.sid, s.parent, eid)
        )  # fmt: skip
    elif kind == "tool":
        tool = str(_first(attrs, m.TOOL_NAME_ATTRS) or sp.name)
        server = str(_first(attrs, m.SERVER_ATTRS) or s.service or "unknown")
        latency = round((end_us - start_us) / 1000, 3)
        payload: dict[str, Any] = {
            "server_id": server,
            "tool": tool,
            "status": "error" if failed else "success",
            "latency_ms": latency,
        }
        args = _first(attrs, m.TOOL_ARGS_ATTRS)
        if args is not None:
            payload["arguments"] = _json_or_text(args)
        transport = attrs.get(m.NETWORK_TRANSPORT)
        if isinstance(transport, str):
            payload["transport"] = m.TRANSPORT_IN.get(transport, transport)
        if failed:
            payload["error"] = sp.status.message or "tool call failed"
        payload[m.OTEL_KEY] = _block(s)
        msg = f"{server}.{tool} {'failed' if failed else 'ok'} in {latency:g} ms"
        out.events.append(
            _event(run_id, agent, MCP_CALL, start_us, "error" if failed else "info", msg, payload, s.sid, s.parent, eid)
        )  # fmt: skip
    else:
        out.events.append(
            _event(
                run_id, agent, LOG, start_us, "error" if failed else "info", sp.name, {m.OTEL_KEY: _block(s)},
                s.sid, s.parent, eid,
            )
        )  # fmt: skip
        if kind == "llm":
            model = _first(attrs, m.MODEL_ATTRS)
            for name, value in _usage(attrs).items():
                p: dict[str, Any] = {"name": name, "value": value, "unit": "usd" if name == "cost_usd" else "tokens"}
                if model is not None:
                    p["model"] = model
                out.events.append(
                    _event(
                        run_id, agent, METRIC, end_us, "info", f"metric {name}={value}", p, s.sid, s.parent,
                        derived_event_id(end_us, "otel", s.trace, s.sid, "metric", name),
                    )
                )  # fmt: skip
    for i, ev in enumerate(sp.events):
        ev_attrs = attrs_of(ev.attributes)
        ts = ev.time_unix_nano // 1000 or start_us
        is_exc = ev.name == "exception"
        text = ev_attrs.get(m.EXCEPTION_MESSAGE) if is_exc else None
        payload = {m.OTEL_KEY: {"trace_id": s.trace, "event": {"name": ev.name, "attributes": ev_attrs}}}
        out.events.append(
            _event(
                run_id, agent, LOG, ts, "error" if is_exc else "info", str(text or ev.name), payload, s.sid, s.parent,
                derived_event_id(ts, "otel", s.trace, s.sid, "event", i),
            )
        )  # fmt: skip


def _usage(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a, name in m.USAGE_IN.items():
        if a in attrs and name not in out:
            v = _num(attrs[a])
            if v is not None:
                out[name] = v
    return out


def _run_of(
    s: _Span, *, owner_parent: Any, spans: Mapping[tuple[str, str], _Span], agent: str, start: int, end: int
) -> Run:
    attrs = s.attrs
    status = attrs.get(m.M_STATUS)
    if status not in RUN_STATUSES or status == "running":
        status = "failed" if s.span.status.code == m.STATUS_ERROR else "succeeded"
    parent_run = attrs.get(m.M_PARENT_RUN_ID)
    if not isinstance(parent_run, str) or not parent_run:
        parent_run = None
        if s.parent is not None:
            above = spans.get((s.trace, s.parent))
            owner = owner_parent(above) if above is not None else None
            parent_run = owner.run_id if owner is not None else m.RUN_ID_PREFIX + s.trace
            if parent_run == s.run_id:
                parent_run = None
    metrics: dict[str, Any] = dict(_usage(attrs))
    model = _first(attrs, m.MODEL_ATTRS)
    if model is not None:
        metrics["model"] = model
    tags = attrs.get(m.OI_TAGS)
    tags = [str(t) for t in tags] if isinstance(tags, list) else []
    return Run.create(
        s.run_id,  # type: ignore[arg-type]
        agent,
        parent_run_id=parent_run,
        started_at=_iso(start),
        status=status,
        tags=tags,
        ended_at=_iso(end),
        metrics=metrics,
    )


_MAX_TS_US = 253_402_300_800_000_000  # year 10000: what every tier can hold as a timestamp


def _text(value: str, name: str) -> str:
    if not value or not value.strip():
        raise ValidationError(f"{name} must not be empty")
    if len(value) > MAX_ID_LEN:
        raise ValidationError(f"{name} is longer than {MAX_ID_LEN} characters")
    if "\x00" in value:
        raise ValidationError(f"{name} contains a NUL character")
    return value


def _event(
    run_id: str,
    agent: str,
    etype: str,
    ts_us: int,
    level: str,
    msg: str | None,
    payload: dict[str, Any],
    span_id: str | None,
    parent: str | None,
    event_id: str,
) -> Event:
    """An event built from decoded OTLP (protobuf has already checked the UTF-8): the checks
    ``Event.create`` makes that this input can fail, at a fraction of their cost."""
    if not 0 < ts_us < _MAX_TS_US:
        raise ValidationError(f"timestamp {ts_us} µs is outside year 1970..9999")
    if msg is not None and "\x00" in msg:
        raise ValidationError("the name or message contains a NUL character")
    text = orjson.dumps(payload).decode()
    if "\\u0000" in text:
        raise ValidationError("an attribute contains a NUL character")
    return Event(
        event_id, ts_us, _text(run_id, "run_id"), _text(agent, "agent"), etype, level, msg, text, span_id, parent
    )


def _iso(ts_us: int) -> str:
    from magsag.backends.schema import iso_from_us

    return iso_from_us(ts_us)  # type: ignore[return-value]


# ------------------------------------------------------------------ logs


def _level(rec: Any) -> str:
    n = int(rec.severity_number)
    if n > 0:
        for bound, level in m.SEVERITY_LEVELS:
            if n < bound:
                return level
        return "critical"
    text = (rec.severity_text or "").strip().lower()
    text = m.OTLP_LEVELS_BY_TEXT.get(text, text)
    return text if text in ("debug", "info", "warning", "error", "critical") else "info"


def map_logs(req: logs_service_pb2.ExportLogsServiceRequest) -> Mapped:
    out = Mapped()
    for rl in req.resource_logs:
        res = attrs_of(rl.resource.attributes)
        service = res.get(m.SERVICE_NAME) if isinstance(res.get(m.SERVICE_NAME), str) else None
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                try:
                    out.events.append(_log_event(rec, service))
                except (ValidationError, ValueError) as exc:
                    out.reject(f"log record: {exc}")
    return out


def _log_event(rec: Any, service: str | None) -> Event:
    if rec.trace_id and len(rec.trace_id) != 16:
        raise ValidationError("trace_id must be 16 bytes")
    if rec.span_id and len(rec.span_id) != 8:
        raise ValidationError("span_id must be 8 bytes")
    attrs = attrs_of(rec.attributes)
    trace = rec.trace_id.hex() if any(rec.trace_id) else None
    sid = rec.span_id.hex() if any(rec.span_id) else None
    ts = (rec.time_unix_nano or rec.observed_time_unix_nano) // 1000
    if ts <= 0:
        raise ValidationError("the record has neither time_unix_nano nor observed_time_unix_nano")
    run_id = attrs.get(m.M_RUN_ID)
    if not isinstance(run_id, str) or not run_id:
        run_id = m.RUN_ID_PREFIX + trace if trace else f"{m.RUN_ID_PREFIX}logs-{service or 'unknown'}"
    body = value_of(rec.body) if rec.HasField("body") else None
    msg = body if isinstance(body, str) else (orjson.dumps(body).decode() if body is not None else None)
    block: dict[str, Any] = {"severity_number": int(rec.severity_number)}
    for k, v in (("trace_id", trace), ("severity_text", rec.severity_text), ("service", service)):
        if v:
            block[k] = v
    if rec.event_name:
        block["event_name"] = rec.event_name
    payload = {"attributes": attrs, m.OTEL_KEY: block}
    key = binascii.hexlify(rec.SerializeToString(deterministic=True)).decode()
    return _event(
        run_id, _agent(attrs, service), LOG, ts, _level(rec), msg, payload, sid, None,
        derived_event_id(ts, "otel-log", service or "", key),
    )  # fmt: skip
