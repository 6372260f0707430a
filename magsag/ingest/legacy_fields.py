"""What every part of the legacy importer shares: file names, field checks, the parse result.

A parsed run folder is a :class:`ParsedRun`: event rows (plain tuples in
:data:`magsag.backends.schema.EVENT_COLUMNS` order, already validated against the rules of
:meth:`magsag.backends.schema.Event.create`, so they can travel between processes cheaply), the
run record, and the rejections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magsag.backends.schema import LEVELS, MAX_ID_LEN, RUNNING
from magsag.ingest.legacy_reader import BadValue, Rejection, kind

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


# ------------------------------------------------------------------ field checks


def opt_text(value: Any, name: str, max_len: int = MAX_ID_LEN) -> str | None:
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


def check_run(value: Any, run_id: str) -> None:
    if value is None or value == run_id:
        return
    if not isinstance(value, str):
        raise BadValue(f"run_id must be a string, got {kind(value)}")
    raise BadValue(f"run_id {value!r} differs from its run folder {run_id!r}")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def opt_number(rec: dict[str, Any], name: str) -> None:
    value = rec.get(name)
    if value is not None and not is_number(value):
        raise BadValue(f"{name} must be a number, got {kind(value)}")


def opt_int(rec: dict[str, Any], name: str) -> None:
    value = rec.get(name)
    if value is None or (isinstance(value, float) and value.is_integer()):
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(f"{name} must be an integer, got {kind(value)}")


def level_of(value: Any) -> str:
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


class RunContext:
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
