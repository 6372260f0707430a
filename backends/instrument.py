"""Ingest instrumentation: where the hot stores report their appends.

The base class's ``append_event``/``append_events`` (every store's write path) tell the
installed :class:`AppendSink` what they wrote and how long it took. Nothing is measured
and nothing is imported unless a sink is installed: the cost is one global lookup per
call. ``magsag.serve.instrument`` installs the Prometheus sink (this layer knows nothing
of Prometheus, nor of anything above it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class AppendSink(Protocol):
    def appended(self, backend: str, op: str, types: Sequence[str], new: int, seconds: float) -> None:
        """``op`` is ``event`` (one ``append_event``) or ``batch``; ``types`` the event types
        written (one per event, duplicates skipped or not), ``new`` how many were stored."""


sink: AppendSink | None = None


def install(new: AppendSink | None) -> AppendSink | None:
    """Install ``new`` (None removes the sink); return the previous one."""
    global sink
    old, sink = sink, new
    return old


def event_types(events: Sequence[Any]) -> list[str]:
    return [e.type for e in events]
