"""Readers of the files of one run folder: each record becomes an event row or a Rejection.

``logs.jsonl`` lines, ``metrics.json``/``summary.json`` metric samples, ``mcp_calls.jsonl``
lines and ``events.jsonl`` envelopes (see docs/migration.md for the mapping).
"""

from __future__ import annotations

from typing import Any

from magsag.backends.schema import MAX_ID_LEN, MAX_TYPE_LEN, MCP_CALL, METRIC, derived_event_id
from magsag.ingest.legacy_fields import (
    EVENTS,
    LOGS,
    MCP_CALLS,
    METRICS,
    SUMMARY,
    RunContext,
    check_run,
    is_number,
    level_of,
    opt_int,
    opt_number,
    opt_text,
    valid_id,
)
from magsag.ingest.legacy_messages import clean_text, mcp_message, metric_message, pairs
from magsag.ingest.legacy_reader import (
    BadValue,
    Rejection,
    dumps_payload,
    epoch_us,
    iso_us,
    kind,
    line_key,
    read_json_document,
    read_jsonl,
)

_LOG_KEYS = frozenset(("run_id", "event", "timestamp", "data", "span_id", "parent_span_id"))
_ENVELOPE_KEYS = frozenset(("ts", "run_id", "span_id", "parent_span_id", "type", "payload", "level", "kv"))
_MCP_TEXT = ("server_id", "tool", "status", "transport", "protocol_version", "session_id", "permission")


def read_summary(ctx: RunContext) -> tuple[dict[str, Any], bool]:
    if not ctx.has(SUMMARY):
        return {}, False
    where = str(ctx.path / SUMMARY)
    _, summary = read_json_document(ctx.path / SUMMARY, ctx.rej, checked=True)
    if summary is None:
        return {}, False
    try:
        if not isinstance(summary, dict):
            raise BadValue(f"summary must be an object, got {kind(summary)}")
        dumps_payload(summary)
        check_run(summary.get("run_id"), ctx.run.run_id)
    except BadValue as exc:
        ctx.rej.append(Rejection(where, None, str(exc)))
        return {}, False
    return summary, True


def read_logs(ctx: RunContext) -> list[tuple[int, int, str, dict[str, Any], str | None, str | None, str, str]]:
    out: list[tuple[int, int, str, dict[str, Any], str | None, str | None, str, str]] = []
    if not ctx.has(LOGS):
        return out
    run_id = ctx.run.run_id
    where = str(ctx.path / LOGS)
    for line in read_jsonl(ctx.path / LOGS, ctx.rej, ctx.max_line, checked=True):
        obj = line.obj
        try:
            if not isinstance(obj, dict):
                raise BadValue(f"a log line must be an object, got {kind(obj)}")
            ts_us = epoch_us(obj.get("timestamp"))
            name = obj.get("event")
            if not isinstance(name, str) or not name.strip():
                raise BadValue("missing event name" if name is None else f"event must be a string, got {kind(name)}")
            if len(name) > MAX_TYPE_LEN:
                raise BadValue(f"event name is longer than {MAX_TYPE_LEN} characters")
            data = obj.get("data")
            if data is None:
                data = {}
            elif not isinstance(data, dict):
                raise BadValue(f"data must be an object, got {kind(data)}")
            if obj.get("run_id") != run_id:
                check_run(obj.get("run_id"), run_id)
            span = obj.get("span_id")
            if span is not None and (type(span) is not str or len(span) > MAX_ID_LEN or "\x00" in span):
                span = opt_text(span, "span_id")
            parent_span = opt_text(obj.get("parent_span_id"), "parent_span_id")
            payload_obj = data
            if not obj.keys() <= _LOG_KEYS:
                payload_obj = {**data, "_legacy_fields": {k: v for k, v in obj.items() if k not in _LOG_KEYS}}
            payload = dumps_payload(payload_obj)
        except BadValue as exc:
            ctx.rej.append(Rejection(where, line.no, str(exc)))
            continue
        key = line_key(line.raw)
        if ctx.fresh(key):
            out.append((ts_us, line.no, name, data, span or None, parent_span, payload, key))
    ctx.run.records[LOGS] = len(out)
    return out


def _metric_samples(doc: Any, ctx: RunContext, where: str, prefix: str) -> list[tuple[str, int, Any, str]]:
    """(name, ts_us, value, value JSON) of each valid sample of a ``metrics`` mapping."""
    out: list[tuple[str, int, Any, str]] = []
    if doc is None:
        return out
    if not isinstance(doc, dict):
        ctx.rej.append(Rejection(where, prefix.rstrip(".") or None, f"metrics must be an object, got {kind(doc)}"))
        return out
    for name, samples in doc.items():
        loc = f"{prefix}{name}"
        if valid_id(name) is None:
            ctx.rej.append(Rejection(where, loc, "metric name is not a usable string"))
            continue
        if not isinstance(samples, list):
            ctx.rej.append(Rejection(where, loc, f"samples must be a list, got {kind(samples)}"))
            continue
        for i, sample in enumerate(samples):
            try:
                if not isinstance(sample, dict):
                    raise BadValue(f"sample must be an object, got {kind(sample)}")
                check_run(sample.get("run_id"), ctx.run.run_id)
                ts_us = epoch_us(sample.get("timestamp"))
                if "value" not in sample:
                    raise BadValue("missing value")
                value = sample["value"]
                value_json = dumps_payload(value)
            except BadValue as exc:
                ctx.rej.append(Rejection(where, f"{loc}[{i}]", str(exc)))
                continue
            out.append((name, ts_us, value, value_json))
    return out


def read_metrics(
    ctx: RunContext, summary: dict[str, Any], slug: str
) -> tuple[dict[str, tuple[int, Any]], dict[str, float]]:
    """metrics.json and summary.metrics: the same sample in both is one event (content id)."""
    doc = None
    if ctx.has(METRICS):
        _, doc = read_json_document(ctx.path / METRICS, ctx.rej, checked=True)
    samples = _metric_samples(doc, ctx, str(ctx.path / METRICS), "")
    samples += _metric_samples(summary.get("metrics"), ctx, str(ctx.path / SUMMARY), "metrics.")
    run_id = ctx.run.run_id
    last: dict[str, tuple[int, Any]] = {}
    totals: dict[str, float] = {}
    n = 0
    for name, ts_us, value, value_json in samples:
        event_id = derived_event_id(ts_us, run_id, METRIC, name, value_json)
        if event_id in ctx.seen:
            continue
        ctx.seen.add(event_id)
        n += 1
        if name not in last or ts_us >= last[name][0]:
            last[name] = (ts_us, value)
        if is_number(value):
            totals[name] = totals.get(name, 0) + value
        ctx.run.rows.append(
            (
                event_id,
                ts_us,
                run_id,
                slug,
                METRIC,
                "info",
                metric_message(name, value),
                f'{{"name":{dumps_payload(name)},"value":{value_json}}}',
                None,
                None,
                None,
                None,
                None,
            )
        )
    ctx.run.records[METRICS] = n
    return last, totals


def read_mcp(ctx: RunContext, slug: str) -> None:
    if not ctx.has(MCP_CALLS):
        return
    run_id = ctx.run.run_id
    where = str(ctx.path / MCP_CALLS)
    n = 0
    for line in read_jsonl(ctx.path / MCP_CALLS, ctx.rej, ctx.max_line, checked=True):
        obj = line.obj
        try:
            if not isinstance(obj, dict):
                raise BadValue(f"an MCP call must be an object, got {kind(obj)}")
            ts_us = epoch_us(obj.get("timestamp"))
            check_run(obj.get("run_id"), run_id)
            for name in _MCP_TEXT:
                if name in obj:
                    opt_text(obj[name], name, 1 << 20)
            opt_number(obj, "latency_ms")
            opt_int(obj, "http_status")
            opt_int(obj, "retries")
            span = opt_text(obj.get("span_id"), "span_id")
            parent_span = opt_text(obj.get("parent_span_id"), "parent_span_id")
            payload = dumps_payload({k: v for k, v in obj.items() if k != "run_id" and k != "timestamp"})
        except BadValue as exc:
            ctx.rej.append(Rejection(where, line.no, str(exc)))
            continue
        key = line_key(line.raw)
        if not ctx.fresh(key):
            continue
        n += 1
        failed = obj.get("status") == "error" or bool(obj.get("error"))
        ctx.run.rows.append(
            (
                derived_event_id(ts_us, run_id, MCP_CALLS, key),
                ts_us,
                run_id,
                slug,
                MCP_CALL,
                "error" if failed else "info",
                mcp_message(obj),
                payload,
                span,
                parent_span,
                None,
                None,
                None,
            )
        )
    ctx.run.records[MCP_CALLS] = n


def read_envelopes(ctx: RunContext, slug: str) -> None:
    """events.jsonl (EventEnvelope v1): each line keeps its own type."""
    if not ctx.has(EVENTS):
        return
    run_id = ctx.run.run_id
    where = str(ctx.path / EVENTS)
    n = 0
    for line in read_jsonl(ctx.path / EVENTS, ctx.rej, ctx.max_line, checked=True):
        obj = line.obj
        try:
            if not isinstance(obj, dict):
                raise BadValue(f"an event must be an object, got {kind(obj)}")
            ts = obj.get("ts")
            ts_us = epoch_us(ts, "ts") if is_number(ts) else iso_us(ts)
            check_run(obj.get("run_id"), run_id)
            etype = obj.get("type")
            if not isinstance(etype, str) or not etype.strip() or len(etype) > MAX_TYPE_LEN or "\x00" in etype:
                raise BadValue("missing type" if etype is None else "type must be a non-empty string")
            level = level_of(obj.get("level"))
            payload_obj = obj.get("payload")
            if payload_obj is None:
                payload_obj = {}
            elif not isinstance(payload_obj, dict):
                raise BadValue(f"payload must be an object, got {kind(payload_obj)}")
            kv = obj.get("kv")
            extra = {k: v for k, v in obj.items() if k not in _ENVELOPE_KEYS}
            if kv or extra:
                payload_obj = dict(payload_obj)
                if kv:
                    payload_obj["kv" if "kv" not in payload_obj else "_kv"] = kv
                if extra:
                    payload_obj["_legacy_fields"] = extra
            payload = dumps_payload(payload_obj)
            span = opt_text(obj.get("span_id"), "span_id")
            parent_span = opt_text(obj.get("parent_span_id"), "parent_span_id")
        except BadValue as exc:
            ctx.rej.append(Rejection(where, line.no, str(exc)))
            continue
        key = line_key(line.raw)
        if not ctx.fresh(key):
            continue
        n += 1
        msg = payload_obj.get("msg") or payload_obj.get("message")
        text = f"{etype} {msg}" if isinstance(msg, str) else f"{etype} {pairs(payload_obj)}".rstrip()
        ctx.run.rows.append(
            (
                derived_event_id(ts_us, run_id, EVENTS, key),
                ts_us,
                run_id,
                slug,
                etype,
                level,
                clean_text(text),
                payload,
                span,
                parent_span,
                None,
                None,
                None,
            )
        )
    ctx.run.records[EVENTS] = n
