"""Event kinds and human messages of imported legacy records.

``msg`` is what full-text search indexes and what a person reads in a table: the legacy
event name followed by a short summary of its data (``key=value`` pairs, never a Python
repr), at most 240 characters, free of NUL and of invalid Unicode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from magsag.backends.schema import DELEGATION, LOG, MCP_CALL

COST = "cost"
_MSG_MAX = 240


# --------------------------------------------------------------------- event names


def is_failure(name: str) -> bool:
    """Log events that end a run as failed unless a later ``end`` reports success."""
    return (
        name in ("error", "engine.execution_failed", "all_delegations_failed")
        or name.endswith(("_failure", "_failed", "_error"))
        or name.endswith(".error")
    )


_KINDS: dict[str, tuple[str, str]] = {}


def event_kind(name: str) -> tuple[str, str]:
    """(event type, level) of a log line named ``name``."""
    found = _KINDS.get(name)
    if found is None:
        etype = DELEGATION if name.startswith("delegation_") or name == "all_delegations_failed" else LOG
        if is_failure(name) or name.endswith("failure") or "error" in name:
            level = "error"
        elif name == "retry" or name.endswith(("retry", "_retrying")):
            level = "warning"
        else:
            level = "info"
        found = (etype, level)
        if len(_KINDS) < 10_000:
            _KINDS[name] = found
    return found


# ------------------------------------------------------------------------ messages


def _scalar(value: Any, limit: int = 80) -> str | None:
    t = type(value)
    if t is str:
        if not value.isprintable():  # newlines, tabs: one line of words
            value = " ".join(value.split())
        return value if len(value) <= limit else value[: limit - 1] + "…"
    if t is int:
        return str(value)
    if t is bool:
        return "true" if value else "false"
    if t is float:
        return f"{value:g}" if abs(value) >= 1e-4 or value == 0 else repr(value)
    return None


def _brief(value: Any) -> str | None:
    t = type(value)
    if t is str or t is int or t is float or t is bool:
        return _scalar(value)
    if t is list:
        if len(value) <= 4:
            items = [_scalar(v, 24) for v in value]
            if None not in items:
                return "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
        return f"[{len(value)} items]"
    if t is dict:
        return f"{{{len(value)} keys}}"
    return None


def pairs(data: dict[str, Any], skip: Iterable[str] = ()) -> str:
    """``key=value`` for the first eight keys whose value reads as text (None is left out)."""
    parts = []
    for key, value in data.items():
        if value is None or key in skip:
            continue
        text = _brief(value)
        if text is not None:
            parts.append(f"{key}={text}")
            if len(parts) == 8:
                break
    return " ".join(parts)


def clean_text(text: str, limit: int = _MSG_MAX) -> str:
    """A message safe for every store: no NUL, valid Unicode, at most ``limit`` characters."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _join(*parts: str | None) -> str:
    return " ".join(p for p in parts if p)


def log_message(name: str, data: dict[str, Any]) -> str:
    """``name`` plus a short human summary of ``data`` (never a Python repr)."""
    g = data.get
    if name == "start":
        text = _join(
            name,
            _scalar(g("slug")) or _scalar(g("agent")),
            f"task {_scalar(g('task_id'))}" if g("task_id") is not None else None,
            f"parent {_scalar(g('parent_run_id'))}" if g("parent_run_id") is not None else None,
        )
    elif name == "end":
        text = _join(
            name,
            _scalar(g("status")),
            f"{_scalar(g('duration_ms'))} ms" if isinstance(g("duration_ms"), (int, float)) else None,
            f"${_scalar(g('cost_usd'))}" if isinstance(g("cost_usd"), (int, float)) else None,
            f"{_scalar(g('tokens'))} tokens" if isinstance(g("tokens"), (int, float)) else None,
        )
    elif name == "delegation_start":
        text = _join(
            name,
            _scalar(g("task_id")),
            f"-> {_scalar(g('sag'))}" if g("sag") is not None else None,
            f"({_scalar(g('run_id'))})" if g("run_id") is not None else None,
        )
    elif "error" in data or name == "retry":
        err = _scalar(g("error"), 160)
        typ = _scalar(g("type"), 60)
        if err and typ and err.startswith(typ):
            typ = None
        head = _join(name, f"attempt {_scalar(g('attempt'))}" if g("attempt") is not None else None, typ)
        rest = pairs(data, skip=("error", "type", "attempt"))
        text = (f"{head}: {err}" if err else head) + (f" ({rest})" if rest else "")
    else:
        text = _join(name, pairs(data))
    return clean_text(text)


def mcp_message(rec: dict[str, Any]) -> str:
    target = ".".join(t for t in (_scalar(rec.get("server_id")), _scalar(rec.get("tool"))) if t) or "call"
    latency = rec.get("latency_ms")
    err = rec.get("error")
    text = _join(
        MCP_CALL,
        target,
        _scalar(rec.get("status")),
        f"{_scalar(latency)} ms" if isinstance(latency, (int, float)) and not isinstance(latency, bool) else None,
        f"http {rec['http_status']}" if isinstance(rec.get("http_status"), int) else None,
    )
    if err:
        text += f": {_scalar(err, 160) or _brief(err)}"
    return clean_text(text)


def metric_message(name: str, value: Any) -> str:
    return clean_text(f"metric {name}={_brief(value)}")


def cost_message(payload: dict[str, Any]) -> str:
    cost = payload.get("cost_usd")
    tokens = payload.get("total_tokens")
    return clean_text(
        _join(
            COST,
            f"${_scalar(cost)}" if cost is not None else None,
            _scalar(payload.get("model")),
            f"{tokens} tokens" if tokens is not None else None,
            f"(step {_scalar(payload.get('step'))})" if payload.get("step") is not None else None,
        )
    )
