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

Event ids are derived from the source record (:func:`magsag.backends.schema.derived_event_id`),
so importing twice stores nothing twice and a file that grew adds only its new lines.
Rows are plain tuples in :data:`magsag.backends.schema.EVENT_COLUMNS` order, already validated
against the same rules as :meth:`magsag.backends.schema.Event.create`, so a parse can run in a
worker process and travel back cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from magsag.backends.schema import CANCELED, FAILED, RUNNING, SUCCEEDED, derived_event_id
from magsag.ingest.legacy_fields import (
    LOGS,
    PLAN,
    RUN_FILES,
    UNKNOWN_AGENT,
    ParsedRun,
    RunContext,
    is_number,
    valid_id,
)
from magsag.ingest.legacy_messages import event_kind, is_failure, log_message
from magsag.ingest.legacy_reader import (
    DEFAULT_MAX_LINE_BYTES,
    BadValue,
    Rejection,
    dumps_payload,
    entry_problem,
    read_json_document,
)
from magsag.ingest.legacy_records import read_envelopes, read_logs, read_mcp, read_metrics, read_summary

_SUCCESS = frozenset(("success", "succeeded", "ok", "completed", "complete", "done"))
_CANCELED = frozenset(("canceled", "cancelled", "aborted", "interrupted"))


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
    ctx = RunContext(run, path, max_line_bytes)
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

    summary, has_summary = read_summary(ctx)
    logs = read_logs(ctx)
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
    last, totals = read_metrics(ctx, summary, slug)
    read_mcp(ctx, slug)
    read_envelopes(ctx, slug)
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
    if not is_number(cost):
        cost = totals.get("cost_usd", end_data.get("cost_usd"))
    tokens = summary.get("token_count")
    if not is_number(tokens):
        tokens = totals.get("tokens", end_data.get("tokens"))
    duration = metrics.get("duration_ms")
    if not is_number(duration):
        duration = end_data.get("duration_ms")
    if not is_number(duration) and run.ended_us is not None and run.started_us is not None:
        duration = round((run.ended_us - run.started_us) / 1000, 3)
    for name, value in (("cost_usd", cost), ("token_count", tokens), ("duration_ms", duration)):
        if is_number(value):
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
    used.update(k for k in ("cost_usd", "token_count") if is_number(summary.get(k)))
    kept = {k: v for k, v in summary.items() if k not in used}
    if kept:
        metrics["legacy_summary"] = kept
    metrics["legacy_import"] = {
        "records": {k: v for k, v in run.records.items() if v},
        "rejected": len(run.rejections),
        "files": run.files,
    }
    run.metrics = metrics
