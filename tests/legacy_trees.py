"""Builders of legacy ``.runs`` trees for the importer tests (older and newer formats, damage).

The real files written by the agent framework are in ``tests/fixtures/legacy-runs/.runs``
(copied from the shared samples); these helpers write more runs in the same shapes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "legacy-runs" / ".runs"
T0 = 1_795_687_273.25  # 2026-11-26T10:01:13.25Z


def sample_tree(tmp_path: Path) -> Path:
    """A private copy of the real sample ``.runs`` folder; returns it (``<tmp>/.runs``)."""
    dest = tmp_path / ".runs"
    shutil.copytree(FIXTURE, dest)
    return dest


def jsonl(records: list[Any]) -> bytes:
    """Lines as the legacy logger wrote them (``json.dumps`` + newline); bytes items go raw."""
    out = b""
    for rec in records:
        out += rec if isinstance(rec, bytes) else (json.dumps(rec, ensure_ascii=False) + "\n").encode()
    return out


def log_line(
    run_id: str, event: str, t: float, data: dict[str, Any] | None = None, span: str | None = None, **extra: Any
) -> dict[str, Any]:
    rec: dict[str, Any] = {"run_id": run_id, "event": event, "timestamp": t, "data": data or {}}
    if span is not None:
        rec["span_id"] = span
    rec.update(extra)
    return rec


def metrics_doc(run_id: str, samples: dict[str, list[tuple[float, Any]]]) -> dict[str, Any]:
    return {k: [{"run_id": run_id, "value": v, "timestamp": t} for t, v in vs] for k, vs in samples.items()}


def write_run(
    root: Path,
    run_id: str,
    *,
    logs: list[Any] | None = None,
    metrics: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    mcp: list[Any] | None = None,
    events: list[Any] | None = None,
    plan: dict[str, Any] | None = None,
) -> Path:
    d = root / run_id
    d.mkdir(parents=True, exist_ok=True)
    if logs is not None:
        (d / "logs.jsonl").write_bytes(jsonl(logs))
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary, indent=2))
    if mcp is not None:
        (d / "mcp_calls.jsonl").write_bytes(jsonl(mcp))
    if events is not None:
        (d / "events.jsonl").write_bytes(jsonl(events))
    if plan is not None:
        (d / "plan.json").write_text(json.dumps(plan, indent=2))
    return d


def new_format_run(
    root: Path,
    run_id: str,
    slug: str,
    *,
    parent: str | None = None,
    t: float = T0,
    outcome: str = "end",
    span: str = "span-00000000000000aa",
) -> Path:
    """A run as today's logger writes it: span ids, metrics.json, full summary, one MCP call."""
    start: dict[str, Any] = {"agent": slug.title(), "slug": slug}
    if parent:
        start.update(parent_run_id=parent, task_id="t1")
    logs = [log_line(run_id, "start", t, start, span)]
    logs.append(log_line(run_id, "skill_invoked", t + 0.1, {"skill": "salary-band"}, span))
    if outcome == "end":
        logs.append(log_line(run_id, "end", t + 0.5, {"status": "success", "duration_ms": 500, "cost_usd": 0.01}, span))
    elif outcome == "error":
        logs.append(log_line(run_id, "error", t + 0.5, {"error": "boom", "type": "RuntimeError"}, span))
    metrics = metrics_doc(run_id, {"duration_ms": [(t + 0.6, 500)], "cost_usd": [(t + 0.6, 0.01)]})
    summary = {
        "run_id": run_id,
        "total_logs": len(logs),
        "metrics": metrics,
        "run_dir": f".runs/agents/{run_id}",
        "span_id": span,
        "cost_usd": 0.01,
        "token_count": 100,
        "otel_enabled": False,
        "slug": slug,
    }
    mcp = [
        {
            "run_id": run_id,
            "timestamp": t + 0.2,
            "server_id": "pg",
            "tool": "query",
            "status": "success",
            "transport": "stdio",
            "latency_ms": 12,
            "arguments": {"sql": "***"},
        }
    ]
    return write_run(root, run_id, logs=logs, metrics=metrics, summary=summary, mcp=mcp)


def old_format_run(root: Path, run_id: str, slug: str, *, t: float = T0) -> Path:
    """An older run: no span ids, no metrics.json, summary with only the five old keys."""
    logs = [
        log_line(run_id, "start", t, {"agent": "Old", "slug": slug}),
        log_line(run_id, "end", t + 1, {"status": "success"}),
    ]
    metrics = metrics_doc(run_id, {"duration_ms": [(t + 1, 1000)], "tokens": [(t + 1, 40), (t + 1.5, 2)]})
    summary = {"run_id": run_id, "total_logs": 2, "metrics": metrics, "run_dir": f".runs/agents/{run_id}", "slug": slug}
    return write_run(root, run_id, logs=logs, summary=summary)
