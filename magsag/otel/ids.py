"""Deterministic OpenTelemetry ids for stored runs and events.

A trace id is 16 bytes and a span id 8 bytes (never all zero). Ids that the store already
holds in OTel form (a span id of 16 hex digits, a trace id of 32, as written by the OTLP
receiver or by an instrumented agent) are kept as they are; anything else is derived
from the run or event id with BLAKE2b, so exporting the same run twice gives the same
ids and a backend that upserts by id holds one copy.
"""

from __future__ import annotations

import re
from hashlib import blake2b

_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def is_span_id(value: object) -> bool:
    """A real OTel span id in its text form: 16 lowercase hex digits, not all zero."""
    return isinstance(value, str) and bool(_HEX16.match(value)) and value != "0" * 16


def is_trace_id(value: object) -> bool:
    return isinstance(value, str) and bool(_HEX32.match(value)) and value != "0" * 32


def _digest(kind: str, key: str, size: int) -> str:
    raw = blake2b(f"magsag.otel\x1f{kind}\x1f{key}".encode("utf-8", "surrogatepass"), digest_size=size).digest()
    if not any(raw):  # the all-zero id is invalid in OTLP
        raw = b"\x01" + raw[1:]
    return raw.hex()


def trace_id_for_run(root_run_id: str) -> str:
    """The trace of a run tree, from the id of its root run."""
    return _digest("trace", root_run_id, 16)


def run_span_id(run_id: str) -> str:
    return _digest("run", run_id, 8)


def event_span_id(event_id: str) -> str:
    """The span an event becomes (an ``mcp.call``, a delegation)."""
    return _digest("event", event_id, 8)


def keep_or_derive_span(value: object, fallback_key: str, kind: str = "event") -> str:
    """``value`` if it is a real OTel span id, else the id derived from ``fallback_key``."""
    if is_span_id(value):
        return value  # type: ignore[return-value]
    return _digest(kind, fallback_key, 8)
