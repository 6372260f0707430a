"""``magsag data export otel`` as a user runs it: report, --json, errors, headers never shown, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from magsag.ingest.demo import load_demo
from magsag.storage import open_storage
from tests.cli_helpers import magsag
from tests.otel.conftest import Receiver, free_port

END = datetime(2026, 3, 1, tzinfo=UTC)
TOKEN = "tok-9f8e7d6c5b4a"


def _store(tmp_path: Path) -> dict[str, str]:
    env = {"MAGSAG_STORAGE_DB_PATH": str(tmp_path / "a.db"), "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake")}

    async def fill() -> None:
        async with open_storage(db_path=tmp_path / "a.db", lake_url=str(tmp_path / "lake")) as s:
            await load_demo(s, days=1, runs_per_day=4, end=END)

    asyncio.run(fill())
    return env


def test_report_json_and_incremental(tmp_path: Path, fresh_receiver: Receiver) -> None:
    env = {**_store(tmp_path), "MAGSAG_OTEL_ENDPOINT": fresh_receiver.url, "MAGSAG_OTEL_HEADERS": f"x-api-key={TOKEN}"}
    first = magsag("data", "export", "otel", "--incremental", "--json", env=env)
    assert first.code == 0, first.err
    rep = first.json()
    assert rep["runs"] > 0 and rep["spans"] > rep["runs"] and rep["bytes"] > 0 and rep["batches"] == 1
    assert rep["endpoint"] == f"{fresh_receiver.url}/v1/traces" and rep["watermark"]["run_id"]
    again = magsag("data", "export", "otel", "--incremental", "--json", env=env)
    assert again.json()["runs"] == 0
    human = magsag("data", "export", "otel", env=env)
    assert human.code == 0 and "OpenTelemetry export" in human.out and f"{rep['runs']}" in human.out
    for r in (first, again, human):
        assert TOKEN not in r.out + r.err
    with sqlite3.connect(fresh_receiver.db) as c:
        assert c.execute("SELECT count(*) FROM runs").fetchone()[0] == rep["runs"]


def test_unreachable_endpoint_is_one_line_and_moves_nothing(tmp_path: Path, fresh_receiver: Receiver) -> None:
    env = {**_store(tmp_path), "MAGSAG_OTEL_HEADERS": f"Authorization=Bearer%20{TOKEN}"}
    closed = f"http://user:pw@127.0.0.1:{free_port()}"
    res = magsag("data", "export", "otel", "--endpoint", closed, "--incremental", "--retries", "1", env=env)
    assert res.code == 1
    assert res.err.strip().startswith("error: cannot reach http://127.0.0.1:")
    assert "connection refused" in res.err and len(res.err.strip().splitlines()) == 1
    assert TOKEN not in res.out + res.err and "pw" not in res.err
    # Nothing moved: the next incremental export to that destination still starts at the beginning.
    with sqlite3.connect(tmp_path / "a.db") as c:
        assert c.execute("SELECT count(*) FROM otel_export_state").fetchone()[0] == 0


def test_bad_input_exits_2(tmp_path: Path) -> None:
    env = _store(tmp_path)
    res = magsag("data", "export", "otel", env=env)
    assert res.code == 2 and "no endpoint" in res.err
    res = magsag("data", "export", "otel", "--endpoint", "ftp://x", env=env)
    assert res.code == 2 and "not an http:// or https:// URL" in res.err
    res = magsag("data", "export", "otel", "--endpoint", "http://127.0.0.1:9", "--status", "running", env=env)
    assert res.code == 2 and "running runs are not exported" in res.err
    res = magsag("data", "export", "otel", "--endpoint", "http://127.0.0.1:9", "--every", "soon", env=env)
    assert res.code == 2 and "--every" in res.err


def test_every_mode_stops_on_sigterm(tmp_path: Path, fresh_receiver: Receiver) -> None:
    env = {**os.environ, **_store(tmp_path), "MAGSAG_OTEL_ENDPOINT": fresh_receiver.url}
    with sqlite3.connect(tmp_path / "a.db") as c:
        want = c.execute("SELECT count(*) FROM runs WHERE status <> 'running'").fetchone()[0]
    cmd = [sys.executable, "-m", "magsag", "data", "export", "otel", "--every", "1h", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for the first round to land, then stop the job
            with sqlite3.connect(tmp_path / "a.db") as c:
                tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
                if "otel_export_state" in tables and c.execute("SELECT runs FROM otel_export_state").fetchone() == (
                    want,
                ):
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert b"SIGTERM: stopping after the current step" in err
    assert b"stopped" in out
