"""The Prometheus sink of the hot stores' append hook (:mod:`magsag.backends.instrument`).

:func:`enable` installs it once per process; from then on every ``append_event`` and
``append_events`` of any store in the process counts its events by backend and type and
observes its latency. Cheap counters only: a label lookup and an increment per call
(per event type present in a batch), no store reads. ``magsag data serve`` enables it at
start (it ingests OTLP when writes are allowed); an agent process that wants the same
figures calls :func:`enable` and exposes :data:`REGISTRY` itself
(``prometheus_client.start_http_server(port, registry=REGISTRY)``).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from magsag.backends import instrument
from magsag.backends.schema import EVENT_TYPES

disable_created_metrics()  # no *_created series: they double every counter for nothing here
REGISTRY = CollectorRegistry(auto_describe=True)
KNOWN_TYPES = frozenset(EVENT_TYPES)

EVENTS_INGESTED = Counter(
    "magsag_events_ingested",
    "Events stored by append_event/append_events in this process (duplicates skipped are not counted).",
    ["backend", "type"],
    registry=REGISTRY,
)
APPEND_SECONDS = Histogram(
    "magsag_append_duration_seconds",
    "Latency of append_event (op=event, until durable) and append_events (op=batch) in this process.",
    ["backend", "op"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
    registry=REGISTRY,
)


def type_label(event_type: str) -> str:
    """Event types are free text: the envelope's own ones keep their name, others are ``other``."""
    return event_type if event_type in KNOWN_TYPES else "other"


class PrometheusSink:
    def appended(self, backend: str, op: str, types: Sequence[str], new: int, seconds: float) -> None:
        APPEND_SECONDS.labels(backend, op).observe(seconds)
        if not new:
            return
        if len(types) == 1:
            EVENTS_INGESTED.labels(backend, type_label(types[0])).inc(new)
            return
        tally = Tally(types)
        if new == len(types):
            for t, n in tally.items():
                EVENTS_INGESTED.labels(backend, type_label(t)).inc(n)
        else:  # some were duplicates: spread what was stored over the batch's types
            for t, n in tally.items():
                EVENTS_INGESTED.labels(backend, type_label(t)).inc(n * new / len(types))


_SINK = PrometheusSink()


def enable() -> None:
    """Install the Prometheus sink (idempotent)."""
    if instrument.sink is not _SINK:
        instrument.install(_SINK)


def disable() -> None:
    if instrument.sink is _SINK:
        instrument.install(None)
