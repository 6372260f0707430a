"""Map one legacy run folder (and cost-ledger records) to canonical event rows and a run record.

The mapping is documented in docs/migration.md; this module is its single definition.

* Every ``logs.jsonl`` line -> one event: type ``delegation`` for ``delegation_*`` and
  ``all_delegations_failed``, else ``log``; ``msg`` = event name + a short human summary;
  ``payload`` = ``data`` unchanged; level ``error`` for errors and failures, ``warning``
  for retries, else ``info``; span ids carried over.
* Every ``metrics.json`` (and ``summary.json`` ``metrics``) sample -> one ``metric`` event
  ``{"name", "value"}``; every ``mcp_calls.jsonl`` line -> one ``mcp.call`` event; every
  ``events.jsonl`` line keeps its own type.
* The run: slug, parent, times, status and metrics as described in :func:`parse_run`.

Event ids are derived from the source record (:func:`backends.schema.derived_event_id`),
so importing twice stores nothing twice and a file that grew adds only its new lines.
Rows are plain tuples in :data:`backends.schema.EVENT_COLUMNS` order, already validated
against the same rules as :meth:`backends.schema.Event.create`, so a parse can run in a
worker process and travel back cheaply.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.schema import (
    CANCELED,
    FAILED,
    LEVELS,
    MAX_ID_LEN,
    MAX_TYPE_LEN,
    MCP_CALL,
    METRIC,
    RUNNING,
    SUCCEEDED,
    derived_event_id,
)
from magsag.ingest.legacy_messages import (
    COST,
    clean_text,
    cost_message,
    event_kind,
    is_failure,
    log_message,
    mcp_message,
    metric_message,
    pairs,
)
from magsag.ingest.legacy_reader import (
    DEFAULT_MAX_LINE_BYTES,
    BadValue,
    Rejection,
    dumps_payload,
    entry_problem,
    epoch_us,
    iso_us,
    kind,
    line_key,
    read_json_document,
    read_jsonl,
)

UNKNOWN_AGENT = "unknown"
UNATTRIBUTED_RUN = "costs-unattributed"
LEGACY_TAG = "legacy"

LOGS, METRICS, SUMMARY, MCP_CALLS, EVENTS, PLAN = (
    "logs.jsonl",
    "metrics.json",
    "summary.json",
    "mcp_calls.jsonl",
    "events.jsonl",
    "plan.json",
)
RUN_FILES = (LOGS, METRICS, SUMMARY, MCP_CALLS, EVENTS, PLAN)

Row = tuple[Any, ...]
_LOG_KEYS = frozenset(("run_id", "event", "timestamp", "data", "span_id", "parent_span_id"))
_ENVELOPE_KEYS = frozenset(("ts", "run_id", "span_id", "parent_span_id", "type", "payload", "level", "kv"))
_MCP_TEXT = ("server_id", "tool", "status", "transport", "protocol_version", "session_id", "permission")
_LEVEL_ALIASES = {"warn": "warning", "err": "error", "fatal": "critical"}
_SUCCESS = frozenset(("success", "succeeded", "ok", "completed", "complete", "done"))
_CANCELED = frozenset(("canceled", "cancelled", "aborted", "interrupted"))


# ------------------------------------------------------------------ field checks


def _opt_text(value: Any, name: str, max_len: int = MAX_ID_LEN) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadValue(f"{name} must be a string, got {kind(value)}")
    if len(value) > max_len:
        raise BadValue(f"{name} is longer than {max_len} characters")
    if "\x00" in value:
        raise BadValue(f"{name} contains a NUL character")
    return value or None


def valid_id(value: Any) -> str | None:
    """``value`` if it is usable as a run id / agent slug, else None."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LEN or "\x00" in value:
        return None
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
    return value


def _check_run(value: Any, run_id: str) -> None:
    if value is None or value == run_id:
        return
    if not isinstance(value, str):
        raise BadValue(f"run_id must be a string, got {kind(value)}")
    raise BadValue(f"run_id {value!r} differs from its run folder {run_id!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _opt_number(rec: dict[str, Any], name: str) -> None:
    value = rec.get(name)
    if value is not None and not _number(value):
        raise BadValue(f"{name} must be a number, got {kind(value)}")


def _opt_int(rec: dict[str, Any], name: str) -> None:
    value = rec.get(name)
    if value is None or (isinstance(value, float) and value.is_integer()):
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(f"{name} must be an integer, got {kind(value)}")


def _level(value: Any) -> str:
    if value is None:
        return "info"
    if not isinstance(value, str):
        raise BadValue(f"level must be a string, got {kind(value)}")
    lv = value.strip().lower()
    lv = _LEVEL_ALIASES.get(lv, lv)
    if lv not in LEVELS:
        raise BadValue(f"level {value!r} is not one of {', '.join(LEVELS)}")
    return lv


# ------------------------------------------------------------------ a run folder


@dataclass(slots=True)
class ParsedRun:
    """Everything one run folder yields: event rows, the run record, and what was rejected."""

    run_id: str
    path: str
    rows: list[Row] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    slug: str = UNKNOWN_AGENT
    parent_run_id: str | None = None
    status: str = RUNNING
    started_us: int | None = None
    ended_us: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, list[int]] = field(default_factory=dict)
    unchanged: bool = False

    @property
    def importable(self) -> bool:
        return bool(self.rows)


class _Ctx:
    """State shared by the readers of one run folder."""

    __slots__ = ("files", "max_line", "path", "rej", "run", "seen")

    def __init__(self, run: ParsedRun, path: Path, max_line: int):
        self.run = run
        self.path = path
        self.rej = run.rejections
        self.seen: set[str] = set()
        self.max_line = max_line
        self.files: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.files

    def fresh(self, key: str) -> bool:
        if key in self.seen:
            self.run.duplicates += 1
            return False
        self.seen.add(key)
        return True


def parse_run(
    path: Path | str,
    run_id: str,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    unless_files: dict[str, list[int]] | None = None,
) -> ParsedRun:
    """Read every file of one run folder and map it (see the module docstring).

    ``run.files`` is the folder's fingerprint: ``[size, mtime_ns]`` of each legacy file.
    When it equals ``unless_files`` (the fingerprint stored at the last import), nothing
    is read and the result is marked ``unchanged``.

    Run record rules: agent slug from ``summary.slug``, else the first ``data.slug`` of a
    log line, else ``unknown``; ``parent_run_id`` from the ``start`` line's
    ``data.parent_run_id``; ``started_at``/``ended_at`` from the first and last record;
    status from the last terminal log event (``end`` -> succeeded unless its
    ``data.status`` says otherwise; ``error``, ``engine.execution_failed`` and other
    failures -> failed), and with no terminal event ``running``, or ``succeeded`` when
    ``summary.json`` exists (the logger writes it when the run is finalized).
    """
    path = Path(path)
    run = ParsedRun(run_id=run_id, path=str(path))
    ctx = _Ctx(run, path, max_line_bytes)
    try:
        with os.scandir(path) as it:
            for entry in it:
                if entry.name in RUN_FILES:
                    problem = entry_problem(entry)
                    if problem is None:
                        ctx.files.add(entry.name)
                        st = entry.stat()
                        run.files[entry.name] = [st.st_size, st.st_mtime_ns]
                    else:
                        run.rejections.append(Rejection(entry.path, None, f"cannot read: {problem}"))
    except OSError as exc:
        run.rejections.append(Rejection(str(path), None, f"cannot list the run folder: {exc.strerror or exc}"))
        return run
    if unless_files is not None and not run.rejections and run.files == unless_files:
        run.unchanged = True
        return run

    summary, has_summary = _read_summary(ctx)
    logs = _read_logs(ctx)
    slug = valid_id(summary.get("slug"))
    parent = None
    for rec in logs:
        data = rec[3]
        if slug is None and "slug" in data:
            slug = valid_id(data["slug"])
        if parent is None and rec[2] == "start" and "parent_run_id" in data:
            parent = valid_id(data["parent_run_id"])
        if slug is not None and parent is not None:
            break
    run.slug = slug = slug or UNKNOWN_AGENT
    run.parent_run_id = parent
    rows = run.rows
    for ts_us, _no, name, data, span, parent_span, payload, key in logs:
        etype, level = event_kind(name)
        rows.append(
            (
                derived_event_id(ts_us, run_id, LOGS, key),
                ts_us,
                run_id,
                slug,
                etype,
                level,
                log_message(name, data),
                payload,
                span,
                parent_span,
                None,
                None,
                None,
            )
        )
    last, totals = _read_metrics(ctx, summary, slug)
    _read_mcp(ctx, slug)
    _read_envelopes(ctx, slug)
    plan = None
    if ctx.has(PLAN):
        _, plan = read_json_document(path / PLAN, run.rejections, checked=True)
        if plan is not None:
            try:
                dumps_payload(plan)
            except BadValue as exc:
                run.rejections.append(Rejection(str(path / PLAN), None, str(exc)))
                plan = None
    _resolve_run(run, logs, has_summary, summary, plan, last, totals)
    return run


def _read_summary(ctx: _Ctx) -> tuple[dict[str, Any], bool]:
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
        _check_run(summary.get("run_id"), ctx.run.run_id)
    except BadValue as exc:
        ctx.rej.append(Rejection(where, None, str(exc)))
        return {}, False
    return summary, True


def _read_logs(ctx: _Ctx) -> list[tuple[int, int, str, dict[str, Any], str | None, str | None, str, str]]:
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
                _check_run(obj.get("run_id"), run_id)
            span = obj.get("span_id")
            if span is not None and (type(span) is not str or len(span) > MAX_ID_LEN or "\x00" in span):
                span = _opt_text(span, "span_id")
            parent_span = _opt_text(obj.get("parent_span_id"), "parent_span_id")
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


def _metric_samples(doc: Any, ctx: _Ctx, where: str, prefix: str) -> list[tuple[str, int, Any, str]]:
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
                _check_run(sample.get("run_id"), ctx.run.run_id)
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


def _read_metrics(ctx: _Ctx, summary: dict[str, Any], slug: str) -> tuple[dict[str, tuple[int, Any]], dict[str, float]]:
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
        if _number(value):
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


def _read_mcp(ctx: _Ctx, slug: str) -> None:
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
            _check_run(obj.get("run_id"), run_id)
            for name in _MCP_TEXT:
                if name in obj:
                    _opt_text(obj[name], name, 1 << 20)
            _opt_number(obj, "latency_ms")
            _opt_int(obj, "http_status")
            _opt_int(obj, "retries")
            span = _opt_text(obj.get("span_id"), "span_id")
            parent_span = _opt_text(obj.get("parent_span_id"), "parent_span_id")
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


def _read_envelopes(ctx: _Ctx, slug: str) -> None:
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
            ts_us = epoch_us(ts, "ts") if _number(ts) else iso_us(ts)
            _check_run(obj.get("run_id"), run_id)
            etype = obj.get("type")
            if not isinstance(etype, str) or not etype.strip() or len(etype) > MAX_TYPE_LEN or "\x00" in etype:
                raise BadValue("missing type" if etype is None else "type must be a non-empty string")
            level = _level(obj.get("level"))
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
            span = _opt_text(obj.get("span_id"), "span_id")
            parent_span = _opt_text(obj.get("parent_span_id"), "parent_span_id")
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


def _resolve_run(
    run: ParsedRun,
    logs: list[Any],
    has_summary: bool,
    summary: dict[str, Any],
    plan: Any,
    last: dict[str, tuple[int, Any]],
    totals: dict[str, float],
) -> None:
    last_us = None
    if run.rows:
        times = [r[1] for r in run.rows]
        run.started_us, last_us = min(times), max(times)
    status = None
    end_data: dict[str, Any] = {}
    for rec in sorted(logs, key=lambda r: (r[0], r[1])):
        name, data = rec[2], rec[3]
        if name == "end":
            end_data = data
            reported = data.get("status")
            text = reported.strip().lower() if isinstance(reported, str) else None
            if reported is None or text in _SUCCESS:
                status = SUCCEEDED
            elif text in _CANCELED:
                status = CANCELED
            else:
                status = FAILED
        elif is_failure(name):
            status = FAILED
    if status is None:
        status = SUCCEEDED if has_summary else RUNNING
    run.status = status
    run.ended_us = last_us if status != RUNNING else None

    metrics: dict[str, Any] = {name: value for name, (_ts, value) in sorted(last.items())}
    cost = summary.get("cost_usd")
    if not _number(cost):
        cost = totals.get("cost_usd", end_data.get("cost_usd"))
    tokens = summary.get("token_count")
    if not _number(tokens):
        tokens = totals.get("tokens", end_data.get("tokens"))
    duration = metrics.get("duration_ms")
    if not _number(duration):
        duration = end_data.get("duration_ms")
    if not _number(duration) and run.ended_us is not None and run.started_us is not None:
        duration = round((run.ended_us - run.started_us) / 1000, 3)
    for name, value in (("cost_usd", cost), ("token_count", tokens), ("duration_ms", duration)):
        if _number(value):
            metrics[name] = value
    if plan is not None:
        metrics["plan"] = plan
        if summary.get("agent_plan") is not None:
            metrics["agent_plan"] = summary["agent_plan"]
    elif summary.get("agent_plan") is not None:
        metrics["plan"] = summary["agent_plan"]
    if summary.get("llm_plan") is not None:
        metrics["llm_plan"] = summary["llm_plan"]
    used = {"run_id", "metrics", "slug", "agent_plan", "llm_plan"}
    used.update(k for k in ("cost_usd", "token_count") if _number(summary.get(k)))
    kept = {k: v for k, v in summary.items() if k not in used}
    if kept:
        metrics["legacy_summary"] = kept
    metrics["legacy_import"] = {
        "records": {k: v for k, v in run.records.items() if v},
        "rejected": len(run.rejections),
        "files": run.files,
    }
    run.metrics = metrics


# ---------------------------------------------------------------- cost ledger

_COST_FIELDS = ("model", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "step", "metadata")


def parse_cost(rec: Any) -> tuple[str, str | None, int, dict[str, Any]]:
    """Validate one cost-ledger record: (run_id, agent, ts_us, payload). Raises BadValue."""
    if not isinstance(rec, dict):
        raise BadValue(f"a cost record must be an object, got {kind(rec)}")
    ts_us = epoch_us(rec.get("timestamp"))
    run_id = rec.get("run_id")
    if run_id is None or run_id == "":
        run_id = UNATTRIBUTED_RUN
    elif valid_id(run_id) is None:
        raise BadValue(f"run_id must be a non-empty string, got {kind(run_id)}")
    agent = rec.get("agent")
    if agent is not None and valid_id(agent) is None:
        raise BadValue(f"agent must be a non-empty string, got {kind(agent)}")
    _opt_text(rec.get("model"), "model")
    _opt_text(rec.get("step"), "step")
    for name in ("input_tokens", "output_tokens", "total_tokens"):
        _opt_int(rec, name)
    if rec.get("cost_usd") is None:
        raise BadValue("missing cost_usd")
    _opt_number(rec, "cost_usd")
    metadata = rec.get("metadata")
    if isinstance(metadata, str):  # costs.db keeps metadata as JSON text
        with contextlib.suppress(ValueError):
            metadata = json.loads(metadata)
    payload = {name: (metadata if name == "metadata" else rec.get(name)) for name in _COST_FIELDS if name in rec}
    for name, value in rec.items():
        if name not in payload and name not in ("timestamp", "run_id", "agent"):
            payload[name] = value
    dumps_payload(payload)
    return run_id, agent, ts_us, payload


def cost_row(run_id: str, slug: str, ts_us: int, payload: dict[str, Any]) -> Row:
    """The ``cost`` event row of a ledger record. Its id hashes the record's content, so the
    same record found in both ``costs.jsonl`` and ``costs.db`` is stored once."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return (
        derived_event_id(ts_us, run_id, COST, canonical),
        ts_us,
        run_id,
        slug,
        COST,
        "info",
        cost_message(payload),
        dumps_payload(payload),
        None,
        None,
        None,
        None,
        None,
    )
