"""The canonical event envelope and run record: one definition for every tier.

This module is the bottom of the stack. Hot stores (``backends``), the Parquet lake
and its query layer (``lakehouse``) and ClickHouse all take their columns from
:data:`EVENT_COLUMNS` / :data:`RUN_COLUMNS` and their Arrow types from
:func:`event_arrow_schema` / :func:`run_arrow_schema`. A column added here is added
everywhere, or the schema tests fail.

Timestamps are UTC with microsecond precision. In hot stores they are kept as integer
microseconds since the Unix epoch (``*_us`` helpers below); at every API boundary they
are ISO-8601 strings (``2025-10-23T08:15:02.123456+00:00``).
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

from magsag.backends import jsontext
from magsag.backends.errors import ValidationError

if TYPE_CHECKING:
    import pyarrow as pa

SCHEMA_VERSION = 1

# Event types named by the envelope; any other non-empty name is accepted too.
LOG = "log"
MCP_CALL = "mcp.call"
METRIC = "metric"
DELEGATION = "delegation"
ARTIFACT = "artifact"
EVENT_TYPES = (LOG, MCP_CALL, METRIC, DELEGATION, ARTIFACT)

LEVELS = ("debug", "info", "warning", "error", "critical")
_LEVEL_ALIASES = {"warn": "warning", "err": "error", "fatal": "critical"}

RUNNING, SUCCEEDED, FAILED, CANCELED = "running", "succeeded", "failed", "canceled"
RUN_STATUSES = (RUNNING, SUCCEEDED, FAILED, CANCELED)
TERMINAL_STATUSES = (SUCCEEDED, FAILED, CANCELED)

# Column order is the order of every table and file in every tier.
EVENT_COLUMNS = (
    "event_id",
    "ts",
    "run_id",
    "agent_slug",
    "type",
    "level",
    "msg",
    "payload",
    "span_id",
    "parent_span_id",
    "contract_id",
    "contract_version",
    "artifact_uri",
)
RUN_COLUMNS = (
    "run_id",
    "agent_slug",
    "parent_run_id",
    "status",
    "started_at",
    "ended_at",
    "metrics",
    "tags",
)

MAX_ID_LEN = 256
MAX_TYPE_LEN = 128
US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- time


def to_us(value: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (UTC)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def iso_from_us(us: int | None) -> str | None:
    if us is None:
        return None
    return from_us(us).isoformat(timespec="microseconds")


def day_of_us(us: int) -> date:
    return (_EPOCH + timedelta(days=us // US_PER_DAY)).date()


def day_start_us(day: date) -> int:
    return to_us(datetime(day.year, day.month, day.day, tzinfo=UTC))


NOW_ENV = "MAGSAG_NOW"


def utc_now() -> datetime:
    """The one clock of the storage layer: the real UTC time, unless ``MAGSAG_NOW`` pins it.

    ``MAGSAG_NOW`` takes an ISO-8601 timestamp with an offset (``2026-03-10T12:00:00Z``);
    demo windows, tier and vacuum cut-offs, relative ``--since`` values and ClickHouse's
    "today" all read it, so a test or a reproducible run fixes "now" in one place.
    """
    pinned = os.environ.get(NOW_ENV)
    if not pinned:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(pinned.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{NOW_ENV}={pinned[:40]!r} is not an ISO-8601 timestamp") from None
    if value.tzinfo is None:
        raise ValidationError(f"{NOW_ENV}={pinned[:40]!r} has no UTC offset (add Z or +00:00)")
    return value.astimezone(UTC)


def hot_cutoff(hot_days: int, now: datetime | None = None) -> datetime:
    """UTC midnight of today minus ``hot_days`` days (right across month/year ends)."""
    if hot_days < 0:
        raise ValidationError(f"hot_days must be >= 0, got {hot_days}")
    now = (now or utc_now()).astimezone(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
    return midnight - timedelta(days=hot_days)


def coerce_datetime(value: Any, name: str, *, required: bool = True) -> datetime | None:
    """Accept an aware datetime or an ISO-8601 string with an offset; return it in UTC.

    Naive datetimes are refused: a timestamp without a zone is ambiguous and would be
    silently shifted by whoever reads it next.
    """
    if value is None:
        if required:
            raise ValidationError(f"{name} is required")
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(f"{name} is not an ISO-8601 timestamp: {value!r}") from None
        if value.tzinfo is None and len(text) == 10:  # a bare date means UTC midnight
            value = value.replace(tzinfo=UTC)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValidationError(
            f"{name} is a naive datetime ({value.isoformat()}); pass an aware datetime, e.g. datetime.now(timezone.utc)"
        )
    return value.astimezone(UTC)


# ---------------------------------------------------------------------- event ids

_id_lock = threading.Lock()
_id_state = [-1, 0, int.from_bytes(os.urandom(4), "big")]  # last ms, counter in that ms, sequence
_id_node = random.SystemRandom().getrandbits(30)


def _format_uuid(value: int) -> str:
    h = value.to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _uuid7_int(ms: int, rand_a: int, rand_b: int) -> int:
    ms &= (1 << 48) - 1
    return (ms << 80) | (0x7 << 76) | ((rand_a & 0xFFF) << 64) | (0b10 << 62) | (rand_b & ((1 << 62) - 1))


def new_event_id(ts_us: int | None = None) -> str:
    """A UUIDv7 (RFC 9562) whose time bits are the event's own timestamp.

    ``rand_b`` holds a per-process node number and a per-process counter (RFC 9562
    method 1), so ids are unique across processes and ids from one writer compress
    well in columnar files. Ids sort by event time, so every tier can use them to
    deduplicate and reloads stay idempotent.
    """
    ms = (ts_us // 1000) if ts_us is not None else time.time_ns() // 1_000_000
    state = _id_state
    with _id_lock:
        if ms == state[0]:
            counter = state[1] = state[1] + 1
        else:
            state[0] = ms
            counter = state[1] = 0
        seq = state[2] = (state[2] + 1) & 0xFFFFFFFF
    return _format_uuid(_uuid7_int(ms, counter, (_id_node << 32) | seq))


def derived_event_id(ts_us: int, *key_parts: object) -> str:
    """A deterministic UUIDv7-shaped id for an imported record.

    The same source record (same ``key_parts``, e.g. file and line identity) always
    gets the same id, so importing twice inserts nothing twice.
    """
    digest = blake2b("\x1f".join(map(str, key_parts)).encode("utf-8", "surrogatepass"), digest_size=10).digest()
    bits = int.from_bytes(digest, "big")
    return _format_uuid(_uuid7_int(ts_us // 1000, bits >> 62, bits))


# ------------------------------------------------------------------- validation


def _check_text(value: Any, name: str, *, required: bool, max_len: int | None = None) -> str | None:
    if value is None:
        if required:
            raise ValidationError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ValidationError(f"{name} must not be empty")
    if max_len is not None and len(value) > max_len:
        raise ValidationError(f"{name} is longer than {max_len} characters")
    if "\x00" in value:
        raise ValidationError(f"{name} contains a NUL character")
    if not value.isascii():  # O(1) for ASCII text; otherwise look for lone surrogates
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"{name} is not valid Unicode (lone surrogate)") from None
    return value


def _check_json_value(value: Any, where: str, depth: int = 0) -> None:
    if depth > 64:
        raise ValidationError(f"{where} is nested too deeply")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{where} contains a non-finite number ({value})")
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValidationError(f"{where} contains a NUL character")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValidationError(f"{where} has a non-string key {k!r}")
            if "\x00" in k:
                raise ValidationError(f"{where} has a key with a NUL character")
            _check_json_value(v, where, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_json_value(v, where, depth + 1)
    elif value is None or isinstance(value, (bool, int)):
        return
    else:
        raise ValidationError(f"{where} contains a value that is not JSON ({type(value).__name__})")


def dump_json(value: Any, where: str) -> str:
    """Serialize a validated JSON value compactly (UTF-8, no NaN)."""
    try:
        raw = jsontext.dumpb(value)
    except (ValueError, TypeError, RecursionError):  # lone surrogates, deep nesting, foreign types
        _check_json_value(value, where)
        raise ValidationError(f"{where} is not serializable as JSON") from None
    if b"null" in raw:  # orjson writes NaN and infinities as null: refuse them as before
        _check_json_value(value, where)
    if b"\\u0000" in raw:
        raise ValidationError(f"{where} contains a NUL character")
    return raw.decode()


def json_object_text(value: Any, name: str) -> str:
    """Validate that ``value`` is a JSON object (dict, or JSON text of one); return its text."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        try:
            value = jsontext.loads(value)
        except ValueError:
            raise ValidationError(f"{name} is not valid JSON") from None
    if not isinstance(value, Mapping):
        raise ValidationError(f"{name} must be a JSON object (dict), got {type(value).__name__}")
    _check_json_value(value, name)
    return dump_json(value, name)


def normalize_level(level: Any) -> str:
    if level is None:
        return "info"
    if not isinstance(level, str) or not level.strip():
        raise ValidationError("level must be a non-empty string")
    lv = level.strip().lower()
    lv = _LEVEL_ALIASES.get(lv, lv)
    if lv not in LEVELS:
        raise ValidationError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    return lv


def normalize_status(status: Any) -> str:
    if status not in RUN_STATUSES:
        raise ValidationError(f"status must be one of {', '.join(RUN_STATUSES)}; got {status!r}")
    return status


def event_row(
    run_id: str,
    agent_slug: str,
    event_type: str,
    timestamp: datetime | str,
    level: str | None = None,
    message: str | None = None,
    payload: Mapping[str, Any] | str | None = None,
    span_id: str | None = None,
    parent_span_id: str | None = None,
    contract_id: str | None = None,
    contract_version: str | None = None,
    artifact_uri: str | None = None,
    event_id: str | None = None,
) -> tuple[Any, ...]:
    """Validate the arguments of ``append_event``; return the row in
    :data:`EVENT_COLUMNS` order (what :meth:`Event.row` gives, without the object)."""
    if type(timestamp) is datetime and timestamp.tzinfo is UTC:  # the common case, already UTC
        ts_us = to_us(timestamp)
    else:
        ts = coerce_datetime(timestamp, "timestamp")
        assert ts is not None
        ts_us = to_us(ts)
    if event_id is not None:
        _check_text(event_id, "event_id", required=True, max_len=64)
    check = _check_text
    return (
        event_id or new_event_id(ts_us),
        ts_us,
        check(run_id, "run_id", required=True, max_len=MAX_ID_LEN),
        check(agent_slug, "agent_slug", required=True, max_len=MAX_ID_LEN),
        check(event_type, "event_type", required=True, max_len=MAX_TYPE_LEN),
        "info" if level is None else normalize_level(level),
        None if message is None else check(message, "message", required=False),
        "{}" if payload is None else json_object_text(payload, "payload"),
        None if span_id is None else check(span_id, "span_id", required=False, max_len=MAX_ID_LEN),
        None if parent_span_id is None else check(parent_span_id, "parent_span_id", required=False, max_len=MAX_ID_LEN),
        None if contract_id is None else check(contract_id, "contract_id", required=False, max_len=MAX_ID_LEN),
        None
        if contract_version is None
        else check(contract_version, "contract_version", required=False, max_len=MAX_ID_LEN),
        None if artifact_uri is None else check(artifact_uri, "artifact_uri", required=False),
    )


# ------------------------------------------------------------------ the records


@dataclass(frozen=True, slots=True)
class Event:
    """One validated event. ``payload`` is held as compact JSON text."""

    event_id: str
    ts_us: int
    run_id: str
    agent_slug: str
    type: str
    level: str
    msg: str | None
    payload: str
    span_id: str | None = None
    parent_span_id: str | None = None
    contract_id: str | None = None
    contract_version: str | None = None
    artifact_uri: str | None = None

    @classmethod
    def create(
        cls,
        run_id: str,
        agent_slug: str,
        event_type: str,
        timestamp: datetime | str,
        level: str | None = None,
        message: str | None = None,
        payload: Mapping[str, Any] | str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        contract_id: str | None = None,
        contract_version: str | None = None,
        artifact_uri: str | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Validate the arguments of ``append_event`` and build the event."""
        return cls(
            *event_row(
                run_id,
                agent_slug,
                event_type,
                timestamp,
                level,
                message,
                payload,
                span_id,
                parent_span_id,
                contract_id,
                contract_version,
                artifact_uri,
                event_id,
            )
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Event:
        """Build from a dict using either the record names (``type``, ``ts``, ``msg``) or
        the ``append_event`` parameter names (``event_type``, ``timestamp``, ``message``)."""
        if isinstance(data, Event):
            return data
        if not isinstance(data, Mapping):
            raise ValidationError(f"an event must be a mapping, got {type(data).__name__}")

        def pick(*names: str) -> Any:
            for n in names:
                if n in data:
                    return data[n]
            return None

        return cls.create(
            run_id=pick("run_id"),
            agent_slug=pick("agent_slug"),
            event_type=pick("event_type", "type"),
            timestamp=pick("timestamp", "ts"),
            level=pick("level"),
            message=pick("message", "msg"),
            payload=pick("payload"),
            span_id=pick("span_id"),
            parent_span_id=pick("parent_span_id"),
            contract_id=pick("contract_id"),
            contract_version=pick("contract_version"),
            artifact_uri=pick("artifact_uri"),
            event_id=pick("event_id"),
        )

    def row(self) -> tuple[Any, ...]:
        """Values in :data:`EVENT_COLUMNS` order, ts as integer microseconds."""
        return (
            self.event_id,
            self.ts_us,
            self.run_id,
            self.agent_slug,
            self.type,
            self.level,
            self.msg,
            self.payload,
            self.span_id,
            self.parent_span_id,
            self.contract_id,
            self.contract_version,
            self.artifact_uri,
        )

    def to_record(self) -> dict[str, Any]:
        return event_record(self.row())


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    agent_slug: str
    parent_run_id: str | None
    status: str
    started_at_us: int
    ended_at_us: int | None = None
    metrics: str = "{}"
    tags: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def create(
        cls,
        run_id: str,
        agent_slug: str,
        parent_run_id: str | None = None,
        started_at: datetime | str | None = None,
        status: str = RUNNING,
        tags: Iterable[str] | None = None,
        ended_at: datetime | str | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> Run:
        started = coerce_datetime(started_at, "started_at", required=False) or utc_now()
        ended = coerce_datetime(ended_at, "ended_at", required=False)
        return cls(
            run_id=_check_text(run_id, "run_id", required=True, max_len=MAX_ID_LEN),  # type: ignore[arg-type]
            agent_slug=_check_text(agent_slug, "agent_slug", required=True, max_len=MAX_ID_LEN),  # type: ignore[arg-type]
            parent_run_id=_check_text(parent_run_id, "parent_run_id", required=False, max_len=MAX_ID_LEN),
            status=normalize_status(status),
            started_at_us=to_us(started),
            ended_at_us=to_us(ended) if ended else None,
            metrics=json_object_text(metrics, "metrics"),
            tags=check_tags(tags),
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Run:
        """Build from a run record dict (``started_at``/``ended_at`` as datetimes or ISO text)."""
        if isinstance(data, Run):
            return data
        if not isinstance(data, Mapping):
            raise ValidationError(f"a run must be a mapping, got {type(data).__name__}")
        return cls.create(
            run_id=data.get("run_id"),  # type: ignore[arg-type]
            agent_slug=data.get("agent_slug"),  # type: ignore[arg-type]
            parent_run_id=data.get("parent_run_id"),
            started_at=data.get("started_at"),
            status=data.get("status", RUNNING),
            tags=data.get("tags"),
            ended_at=data.get("ended_at"),
            metrics=data.get("metrics"),
        )

    def row(self) -> tuple[Any, ...]:
        """Values in :data:`RUN_COLUMNS` order (times as int microseconds, JSON as text)."""
        return (
            self.run_id,
            self.agent_slug,
            self.parent_run_id,
            self.status,
            self.started_at_us,
            self.ended_at_us,
            self.metrics,
            jsontext.tags_text(list(self.tags)),
        )


def check_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise ValidationError("tags must be a list of strings")
    out = []
    for t in tags:
        out.append(_check_text(t, "tag", required=True, max_len=MAX_ID_LEN))
    return tuple(out)  # type: ignore[arg-type]


# ------------------------------------------------------------ record conversion


def _loads(text: Any, default: Any) -> Any:
    if text is None:
        return default
    if isinstance(text, (dict, list)):
        return text
    try:
        return jsontext.loads(text)
    except (TypeError, ValueError):
        return default


def event_record(row: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    """A row in EVENT_COLUMNS order (ts as int microseconds) -> the public dict."""
    rec = dict(zip(EVENT_COLUMNS, row, strict=True))
    rec["ts"] = iso_from_us(rec["ts"])
    rec["payload"] = _loads(rec["payload"], {})
    return rec


def run_record(row: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    """A row in RUN_COLUMNS order (times as int microseconds) -> the public dict."""
    rec = dict(zip(RUN_COLUMNS, row, strict=True))
    rec["started_at"] = iso_from_us(rec["started_at"])
    rec["ended_at"] = iso_from_us(rec["ended_at"])
    rec["metrics"] = _loads(rec["metrics"], {})
    rec["tags"] = list(_loads(rec["tags"], []))
    return rec


# ------------------------------------------------------------------ Arrow schema


@cache
def event_arrow_schema() -> pa.Schema:
    """The canonical Arrow schema of events in the lake and in every Arrow exchange."""
    import pyarrow as pa

    s = pa.string()
    return pa.schema(
        [
            pa.field("event_id", s, nullable=False),
            pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("run_id", s, nullable=False),
            pa.field("agent_slug", s, nullable=False),
            pa.field("type", s, nullable=False),
            pa.field("level", s),
            pa.field("msg", s),
            pa.field("payload", s, metadata={"format": "json"}),
            pa.field("span_id", s),
            pa.field("parent_span_id", s),
            pa.field("contract_id", s),
            pa.field("contract_version", s),
            pa.field("artifact_uri", s),
        ],
        metadata={"magsag.table": "events", "magsag.schema_version": str(SCHEMA_VERSION)},
    )


@cache
def run_arrow_schema() -> pa.Schema:
    import pyarrow as pa

    s = pa.string()
    ts = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            pa.field("run_id", s, nullable=False),
            pa.field("agent_slug", s, nullable=False),
            pa.field("parent_run_id", s),
            pa.field("status", s, nullable=False),
            pa.field("started_at", ts, nullable=False),
            pa.field("ended_at", ts),
            pa.field("metrics", s, metadata={"format": "json"}),
            pa.field("tags", pa.list_(s)),
        ],
        metadata={"magsag.table": "runs", "magsag.schema_version": str(SCHEMA_VERSION)},
    )
