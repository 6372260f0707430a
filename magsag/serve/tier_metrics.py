"""The tiering job's own metrics: exposed over HTTP by ``tier --every --metrics-port`` and
written for node-exporter's textfile collector by ``tier --metrics-file``.

Names (all ``magsag_tier_job_*``; ``mode`` is ``move`` for ``tier``, ``copy`` for ``archive``):

* ``runs_total{outcome}``: jobs finished by outcome (``success``, ``failed``, ``stopped``);
* ``last_failed``: 1 when the newest job failed, else 0 (what the TierJobFailed alert reads);
* ``last_run_timestamp_seconds``, ``last_success_timestamp_seconds``;
* ``last_duration_seconds``, ``last_bytes`` (written to the lake), ``last_events``, ``last_days``.

The textfile is written atomically (a temporary file renamed over the old one), so
node-exporter never reads half of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    start_http_server,
    write_to_textfile,
)

from magsag.backends.schema import utc_now

disable_created_metrics()  # no *_created series: they double every counter for nothing here
OUTCOMES = ("success", "failed", "stopped")


class TierJobMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter("magsag_tier_job_runs", "Tiering jobs finished, by outcome.", ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.runs.labels(outcome)
        self.last_failed = Gauge("magsag_tier_job_last_failed", "1 when the newest tiering job failed.", registry=r)
        self.last_run = Gauge(
            "magsag_tier_job_last_run_timestamp_seconds", "When the newest tiering job ended.", registry=r
        )
        self.last_success = Gauge(
            "magsag_tier_job_last_success_timestamp_seconds", "When a tiering job last succeeded.", registry=r
        )
        self.duration = Gauge("magsag_tier_job_last_duration_seconds", "Duration of the newest job.", registry=r)
        self.bytes = Gauge("magsag_tier_job_last_bytes", "Bytes the newest job wrote to the lake.", registry=r)
        self.events = Gauge("magsag_tier_job_last_events", "Events the newest job moved.", registry=r)
        self.days = Gauge("magsag_tier_job_last_days", "Days the newest job moved.", registry=r)

    def record(self, report: Any | None, seconds: float, *, failed: bool = False, now: float | None = None) -> None:
        """One finished job: its report (None when it failed before having one)."""
        ended = utc_now().timestamp() if now is None else now
        stopped = bool(getattr(report, "stopped", False))
        outcome = "failed" if failed else "stopped" if stopped else "success"
        self.runs.labels(outcome).inc()
        self.last_failed.set(1 if failed else 0)
        self.last_run.set(ended)
        self.duration.set(seconds)
        if not failed:
            if not stopped:
                self.last_success.set(ended)
            self.bytes.set(getattr(report, "bytes", 0) or 0)
            self.events.set(getattr(report, "events", 0) or 0)
            self.days.set(len(getattr(report, "days", []) or []))

    def write_textfile(self, path: Path) -> None:
        write_to_textfile(str(path), self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        """Expose ``/metrics`` on ``host:port`` from a daemon thread; returns the server."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
