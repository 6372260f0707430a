"""Test helpers for magsag/serve: a real uvicorn server in a thread, free ports, seed data."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from magsag.backends.schema import Event, Run, to_us

NOW = datetime(2025, 10, 23, 12, 0, tzinfo=UTC)  # the pinned "now" of every serve test
GUARD_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1:``port`` from a thread (its own event loop)."""

    def __init__(self, app: Any, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, name="magsag-test-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + GUARD_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(GUARD_S)


def ago(**kw: float) -> datetime:
    return NOW - timedelta(**kw)


def seed_rows() -> tuple[list[Run], list[Event]]:
    """Runs and events around :data:`NOW`: a MAG delegating to two SAGs, a failing agent,
    MCP calls, costs by model, and one finished run ten days old (past a 7-day window)."""
    runs: list[Run] = []
    events: list[Event] = []

    def run(
        run_id: str,
        agent: str,
        start: datetime,
        end: datetime | None,
        status: str,
        parent: str | None = None,
        **metrics: Any,
    ) -> None:
        runs.append(
            Run(run_id, agent, parent, status, to_us(start), to_us(end) if end else None, json.dumps(metrics), ())
        )

    def event(rid: str, agent: str, when: datetime, etype: str, msg: str, level: str = "info", **payload: Any) -> None:
        events.append(Event.create(rid, agent, etype, when, level=level, message=msg, payload=payload))

    run("mag-1", "offer-mag", ago(minutes=30), ago(minutes=5), "succeeded", tokens=300, cost_usd=0.03)
    event("mag-1", "offer-mag", ago(minutes=30), "log", "start offer-mag")
    for i, sag in enumerate(("sag-1", "sag-2")):
        event("mag-1", "offer-mag", ago(minutes=29 - i), "delegation", f"delegation_start t{i}", run_id=sag)
        run(
            sag,
            "advisor-sag",
            ago(minutes=28 - i),
            ago(minutes=10 - i),
            "succeeded",
            parent="mag-1",
            tokens=150,
            cost_usd=0.015,
            model="gpt-4.1-mini",
        )
        event(
            sag,
            "advisor-sag",
            ago(minutes=27 - i),
            "mcp.call",
            "pg.query ok in 35 ms",
            server_id="pg",
            tool="query",
            status="success",
            latency_ms=35 + i,
        )
        event(
            sag,
            "advisor-sag",
            ago(minutes=26 - i),
            "mcp.call",
            "web.fetch failed in 900 ms",
            level="error",
            server_id="web",
            tool="fetch",
            status="error",
            latency_ms=900,
        )
    for i in range(7):  # 6 of 7 runs fail: above the 20% error-rate alert, at least 5 runs
        status = "failed" if i else "succeeded"
        run(
            f"bad-{i}",
            "flaky-sag",
            ago(minutes=50 - i),
            ago(minutes=40 - i),
            status,
            tokens=10,
            cost_usd=0.5,
            model="claude-sonnet-4",
        )
        event(f"bad-{i}", "flaky-sag", ago(minutes=41 - i), "log", f"end {status}", level="error" if i else "info")
    run("mag-live", "offer-mag", ago(minutes=2), None, "running")
    event("mag-live", "offer-mag", ago(minutes=2), "log", "still running")
    run("old-1", "offer-mag", ago(days=10), ago(days=10) + timedelta(minutes=5), "succeeded")
    event("old-1", "offer-mag", ago(days=10), "log", "ten days ago: past the hot window, not tiered yet")
    return runs, events


def lake_rows() -> list[Event]:
    """Events already in the lake (20 days old)."""
    return [Event.create("lake-1", "offer-mag", "log", ago(days=20), message=f"in the lake {i}") for i in range(3)]


def write_seed_lake(lake: Path) -> None:
    from tests.lake_builder import write_lake

    write_lake(
        str(lake),
        lake_rows(),
        [Run("lake-1", "offer-mag", None, "succeeded", to_us(ago(days=20)), to_us(ago(days=20)), "{}", ())],
    )
