"""magsag data serve: the JSON API, access rules, hostile parameters, SSE, metrics, secrets."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.serve.helpers import GUARD_S, NOW, ServerThread, free_port, seed_rows, write_seed_lake

TOKEN = "tok-" + "x" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _seed(db: Path) -> None:
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    runs, events = seed_rows()
    async with SQLiteStorageBackend(db_path=db) as store:
        await store.upsert_runs(runs)
        await store.append_events(events)


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    from magsag.lakehouse.settings import load_settings

    db = tmp_path / "hot.db"
    asyncio.run(_seed(db))
    write_seed_lake(tmp_path / "lake")
    return load_settings(backend="sqlite", db_path=db, lake_url=str(tmp_path / "lake"), hot_days=7)


@pytest.fixture
def client(settings: Any) -> Iterator[TestClient]:
    from magsag.serve import ServeConfig, create_app

    app = create_app(settings, ServeConfig(token=TOKEN, metrics_ttl_s=0.0), clock=lambda: NOW)
    with TestClient(app, headers=AUTH) as c:
        yield c


def test_runs_list_filters_and_caps(client: TestClient) -> None:
    body = client.get("/api/runs", params={"agent": "flaky-sag", "status": "failed"}).json()
    assert sorted(r["run_id"] for r in body["runs"]) == [f"bad-{i}" for i in range(1, 7)]
    assert client.get("/api/runs", params={"limit": "2", "offset": "1"}).json()["limit"] == 2
    huge = client.get("/api/runs", params={"limit": "99999999999"}).json()
    assert huge["limit"] == 1000  # capped, and the answer says so
    lake_run = client.get("/api/runs", params={"agent": "offer-mag", "since": "2025-10-01", "until": "2025-10-05"})
    assert [r["run_id"] for r in lake_run.json()["runs"]] == ["lake-1"]  # from the lake


@pytest.mark.parametrize(
    ("path", "params", "status", "needle"),
    [
        ("/api/runs", {"limit": "-1"}, 400, "whole number"),
        ("/api/runs", {"limit": "ten"}, 400, "whole number"),
        ("/api/runs", {"since": "yesterday-ish"}, 400, "since"),
        ("/api/runs", {"color": "blue"}, 400, "unknown parameter 'color'"),
        ("/api/runs", {"status": "exploded"}, 422, "status"),
        ("/api/runs", {"agent": "a" * 5000}, 400, "longer than"),
        ("/api/runs/bad-1", {"level": "loud"}, 422, "level"),
        ("/api/search", {}, 400, "'q' is required"),
        ("/api/search", {"q": "x", "raw": "maybe"}, 400, "true or false"),
        ("/api/search", {"q": '"unterminated AND (', "raw": "true"}, 422, "malformed"),
        ("/api/metrics", {"name": "tokens", "agg": "median-ish"}, 422, "aggregation"),
        ("/api/stream", {"cursor": "not-a-cursor"}, 422, "cursor"),
        ("/api/runs/nope", {}, 404, "not found"),
    ],
)
def test_hostile_parameters_get_one_line_errors(
    client: TestClient, path: str, params: dict[str, str], status: int, needle: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"] and "\n" not in r.json()["error"]


def test_run_events_tree_search_metrics(client: TestClient) -> None:
    one = client.get("/api/runs/sag-1", params={"type": "mcp.call"}).json()
    assert one["run"]["parent_run_id"] == "mag-1" and [e["payload"]["server_id"] for e in one["events"]] == [
        "pg",
        "web",
    ]
    assert client.get("/api/runs/sag-1", params={"limit": "1"}).json()["truncated"] is True
    tree = client.get("/api/runs/mag-1/tree").json()
    assert [c["run_id"] for c in tree["run"]["children"]] == ["sag-1", "sag-2"] and tree["nodes"] == 3
    assert client.get("/api/runs/mag-1/tree", params={"max_nodes": "2"}).json()["truncated"] is True
    hits = client.get("/api/search", params={"q": "fetch failed"}).json()["hits"]
    assert {h["run_id"] for h in hits} == {"sag-1", "sag-2"}
    assert client.get("/api/search", params={"q": "in the lake"}).json()["hits"][0]["tier"] == "lake"
    latency = client.get("/api/metrics", params={"name": "tokens"}).json()
    assert latency == {"metric": "tokens", "aggregation": "avg", "value": None, "count": 0}


def test_token_read_only_and_openapi(settings: Any) -> None:
    from magsag.serve import ServeConfig, create_app

    with TestClient(create_app(settings, ServeConfig(token=TOKEN))) as c:
        assert c.get("/healthz").json()["status"] == "ok"  # no token needed
        for path in ("/api/runs", "/metrics", "/openapi.json", "/api/stream"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/runs", headers={"Authorization": TOKEN}).status_code == 401
        assert c.delete("/api/runs/mag-1", headers=AUTH).status_code == 405
        assert c.post("/v1/traces", headers=AUTH, content=b"x").status_code == 403  # read-only: no OTLP
        schema = c.get("/openapi.json", headers=AUTH).json()
    assert schema["openapi"].startswith("3.") and "/api/stream" in schema["paths"]
    params = {p["name"] for p in schema["paths"]["/api/runs"]["get"]["parameters"]}
    assert params == {"agent", "status", "since", "until", "limit", "offset"}
    with TestClient(create_app(settings, ServeConfig())) as open_client:
        assert open_client.get("/api/runs").status_code == 200  # no token configured: open


def test_metrics_endpoint(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert 'magsag_runs{agent="flaky-sag",status="failed"} 6.0' in text
    assert 'magsag_runs_ended_window{agent="flaky-sag",status="failed"} 6.0' in text
    assert 'magsag_agent_cost_usd_window{agent="flaky-sag",model="claude-sonnet-4"} 3.5' in text
    assert 'magsag_tier_lag_days{backend="sqlite"} 3.0' in text  # pinned now, 7-day window
    assert 'magsag_lake_rows{dataset="events"} 3.0' in text
    assert 'magsag_mcp_call_duration_seconds_bucket{le="1.0",server="web",tool="fetch"} 2.0' in text
    assert "run_id" not in text and "bad-1" not in text  # run ids never become labels


def test_agent_labels_are_bounded(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from magsag.serve import ServeConfig, create_app
    from magsag.serve import metrics as live_metrics

    monkeypatch.setattr(live_metrics, "MAX_AGENTS", 2)
    with TestClient(create_app(settings, ServeConfig(metrics_ttl_s=0.0), clock=lambda: NOW)) as c:
        text = c.get("/metrics").text
    agents = {line.split('agent="')[1].split('"')[0] for line in text.splitlines() if line.startswith("magsag_runs{")}
    assert agents == {"flaky-sag", "offer-mag", "other"}


def _sse_events(lines: Iterator[str], n: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    ident = None
    for line in lines:
        if line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: "):
            out.append((ident or "", json.loads(line[6:])))
            if len(out) == n:
                break
    return out


def test_sse_stream_resumes_with_last_event_id(settings: Any) -> None:
    from magsag.serve import ServeConfig, create_app

    with ServerThread(create_app(settings, ServeConfig(token=TOKEN))) as server:
        url = f"{server.url}/api/stream"
        params = {"since": "2025-10-23T11:00:00Z", "agent": "flaky-sag"}
        with httpx.stream("GET", url, params=params, headers=AUTH, timeout=GUARD_S) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            first = _sse_events(r.iter_lines(), 3)
        assert [e["run_id"] for _, e in first] == ["bad-0", "bad-1", "bad-2"]
        assert all(ident == e["cursor"] for ident, e in first)
        headers = {**AUTH, "Last-Event-ID": first[1][0]}
        with httpx.stream("GET", url, params=params, headers=headers, timeout=GUARD_S) as r:
            again = _sse_events(r.iter_lines(), 2)
        assert [e["run_id"] for _, e in again] == ["bad-2", "bad-3"]


def test_a_slow_sse_client_cannot_make_the_server_buffer(settings: Any) -> None:
    """A client that never reads: the producer stops once socket buffers + queue are full."""
    from magsag.serve import ServeConfig, create_app
    from magsag.serve.sse import QUEUE_EVENTS

    app = create_app(settings, ServeConfig())
    total = 60_000
    with ServerThread(app) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /api/stream?run_id=flood HTTP/1.1\r\nHost: x\r\n\r\n")
        stats = app.state.stream_stats
        deadline = time.monotonic() + GUARD_S
        while stats.active == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        asyncio.run(_flood(settings.db_path, total))
        # Wait until the producer stops moving (it is blocked on a full queue), then check the bound.
        last, still = -1, 0
        while still < 6 and time.monotonic() < deadline:
            time.sleep(0.25)
            still = still + 1 if stats.read == last else 0
            last = stats.read
        sock.close()
    # The producer stopped before the end of the flood (what the kernel's loopback socket buffers
    # absorb varies with load and autotuning, so no tighter figure), and what it holds is bounded:
    assert stats.read < total, stats.read
    assert stats.read - stats.sent <= QUEUE_EVENTS + 1000 + 1  # queue + one store page in memory


async def _flood(db: Path, n: int) -> None:
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    async with SQLiteStorageBackend(db_path=db) as store:
        for start in range(0, n, 10_000):
            await store.append_events(
                [
                    {"run_id": "flood", "agent_slug": "a", "type": "log", "ts": NOW, "msg": "x" * 200 + str(i)}
                    for i in range(start, start + 10_000)
                ]
            )


def test_serve_cli_never_prints_the_token_or_the_password(tmp_path: Path) -> None:
    """Started against PostgreSQL with a password in the DSN and a token set: neither appears
    in anything the server prints, nor in its error answers."""
    port = free_port()
    secret_dsn = "postgresql://postgres:hunter2-secret@127.0.0.1:5432/postgres"
    env = {"MAGSAG_SERVE_TOKEN": TOKEN, "MAGSAG_STORAGE_PG_SCHEMA": "t_live_serve_secret", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "magsag", "data", "serve", "--backend", "postgres", "--dsn", secret_dsn,
         "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**env, "HOME": str(tmp_path)},
        cwd=tmp_path,
    )  # fmt: skip
    bodies = []
    try:
        deadline = time.monotonic() + GUARD_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                bodies.append(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        if proc.poll() is None:
            bodies.append(httpx.get(f"http://127.0.0.1:{port}/api/runs?status=bad", headers=AUTH, timeout=5).text)
            bodies.append(httpx.get(f"http://127.0.0.1:{port}/api/runs", timeout=5).text)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=GUARD_S)
        asyncio.run(_drop_schema("t_live_serve_secret"))
    text = out.decode() + "".join(bodies)
    assert "magsag serve:" in text or bodies  # it started (or said why not)
    assert "hunter2-secret" not in text and TOKEN not in text


async def _drop_schema(schema: str) -> None:
    try:
        import asyncpg

        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
    except Exception:
        pass


def test_export_watermark_lag_metrics(settings: Any) -> None:
    """The continuous OTLP export's lag per destination: none before any export, then the
    waiting runs and how long the oldest has waited (the watermark as the export stores it)."""
    from magsag.otel import watermark
    from magsag.serve import ServeConfig, create_app
    from magsag.storage import get_storage_backend
    from tests.serve.helpers import ago

    with TestClient(create_app(settings, ServeConfig(metrics_ttl_s=0.0), clock=lambda: NOW)) as c:
        assert "magsag_otel_export_pending_runs{" not in c.get("/metrics").text

    async def mark() -> None:
        store = await get_storage_backend(settings)
        try:  # the destination took every finished run up to sag-2 (ended 9 minutes ago)
            await watermark.save(store, "http://127.0.0.1:6006/v1/traces#default", (to_us(ago(minutes=9)), "sag-2"), 9)
        finally:
            await store.close()

    from magsag.backends.schema import to_us

    asyncio.run(mark())
    with TestClient(create_app(settings, ServeConfig(metrics_ttl_s=0.0), clock=lambda: NOW)) as c:
        text = c.get("/metrics").text
    dest = 'destination="http://127.0.0.1:6006/v1/traces#default"'
    assert f"magsag_otel_export_pending_runs{{{dest}}} 1.0" in text  # mag-1 ended 5 minutes ago
    assert f"magsag_otel_export_lag_seconds{{{dest}}} 300.0" in text
    mark_line = next(
        ln for ln in text.splitlines() if ln.startswith(f"magsag_otel_export_watermark_timestamp_seconds{{{dest}}}")
    )
    assert float(mark_line.rsplit(" ", 1)[1]) == ago(minutes=9).timestamp()
