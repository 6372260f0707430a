"""Real peers for the OpenTelemetry tests: Arize Phoenix and the receiver on loopback.

Phoenix is heavy (~450 MB, ~15 s to start): one instance per test session, started by
the first test that asks for it. Its tests carry ``xdist_group("phoenix")`` so that under
``pytest -n N --dist loadgroup`` they all run in one worker and Phoenix starts once; a
file lock in the session's temp root keeps two workers from racing on ports meanwhile.
Without Phoenix installed the tests skip (in CI they fail: CI must install it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

IN_CI = bool(os.environ.get("CI"))
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    http = urllib3.PoolManager(retries=False, timeout=2.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(urllib3.exceptions.HTTPError):
            if http.request("GET", url).status < 500:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Phoenix:
    """A running Phoenix: its base URL and reads through its REST API."""

    def __init__(self, url: str):
        self.url = url
        self.http = urllib3.PoolManager(retries=False, timeout=30.0)

    @property
    def otlp(self) -> str:
        return self.url

    def spans(self, project: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            q = f"{self.url}/v1/projects/{project}/spans?limit=1000" + (f"&cursor={cursor}" if cursor else "")
            r = self.http.request("GET", q)
            if r.status == 404:
                return []
            assert r.status == 200, r.data[:300]
            body = orjson.loads(r.data)
            out.extend(body["data"])
            cursor = body.get("next_cursor")
            if not cursor:
                return out

    def wait_spans(self, project: str, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Phoenix inserts in the background: poll until ``count`` spans are readable."""
        deadline = time.monotonic() + timeout
        spans: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            spans = self.spans(project)
            if len(spans) >= count:
                return spans
            time.sleep(0.5)
        raise AssertionError(f"Phoenix holds {len(spans)} spans of project {project!r}, expected {count}")


def iso_us(text: str) -> int:
    from magsag.backends.schema import to_us

    return to_us(datetime.fromisoformat(text.replace("Z", "+00:00")))


PHOENIX_URL_ENV = "MAGSAG_TEST_PHOENIX_URL"  # set by tests/conftest.py when it started Phoenix early


def phoenix_importable() -> bool:
    try:
        import phoenix.server.main  # noqa: F401
    except ImportError:
        return False
    return True


def start_phoenix(work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start ``phoenix serve`` on free loopback ports in ``work``; returns (process, url, log)."""
    port, grpc = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    }
    log = work / "phoenix.log"
    exe = shutil.which("phoenix", path=str(Path(sys.executable).parent)) or shutil.which("phoenix")
    cmd = [exe, "serve"] if exe else [sys.executable, "-m", "phoenix.server.main", "serve"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    return proc, f"http://127.0.0.1:{port}", log


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """Phoenix: the one tests/conftest.py started at the session's start (it has had the run
    so far to come up: on a busy machine it takes minutes), else one started here."""
    if not phoenix_importable():
        if IN_CI:
            pytest.fail("arize-phoenix is not installed (CI must install it)")
        pytest.skip("arize-phoenix is not installed")
    early = os.environ.get(PHOENIX_URL_ENV)
    if early:
        http = urllib3.PoolManager(retries=False, timeout=2.0)
        deadline = time.monotonic() + 600
        while True:
            with contextlib.suppress(urllib3.exceptions.HTTPError):
                if http.request("GET", f"{early}/healthz").status < 500:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Phoenix at {early} did not answer")
            time.sleep(0.5)
        yield Phoenix(early)
        return
    from filelock import FileLock

    work = tmp_path_factory.mktemp("phoenix")
    lock = FileLock(str(tmp_path_factory.getbasetemp().parent / "magsag-phoenix-start.lock"))
    with lock:
        proc, url, log = start_phoenix(work)
        try:
            wait_http(f"{url}/healthz", proc, 600.0, log)  # ~15 s idle, minutes on a busy machine
        except BaseException:
            stop(proc)
            raise
    try:
        yield Phoenix(url)
    finally:
        stop(proc)


class Receiver:
    """``magsag data serve --allow-writes`` (which mounts the OTLP receiver at /v1) on loopback
    over its own SQLite store."""

    def __init__(self, url: str, db: Path, lake: Path, token: str | None):
        self.url, self.db, self.lake, self.token = url, db, lake, token
        self.http = urllib3.PoolManager(retries=False, timeout=30.0)

    def env(self) -> dict[str, str]:
        return {"MAGSAG_STORAGE_DB_PATH": str(self.db), "MAGSAG_STORAGE_LAKE_URL": str(self.lake)}

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        if self.token and "Authorization" not in headers:
            headers = {**headers, "Authorization": f"Bearer {self.token}"}
        return self.http.request("POST", self.url + path, body=body, headers=headers)


def start_receiver(tmp: Path, token: str | None = None, max_body: int | None = None) -> tuple[Receiver, Any]:
    port = free_port()
    db, lake = tmp / "received.db", tmp / "lake"
    env = {**os.environ, "MAGSAG_STORAGE_DB_PATH": str(db), "MAGSAG_STORAGE_LAKE_URL": str(lake)}
    env.pop("MAGSAG_SERVE_TOKEN", None)
    if token:
        env["MAGSAG_SERVE_TOKEN"] = token
    if max_body:
        env["MAGSAG_OTEL_MAX_BODY_BYTES"] = str(max_body)
    log = tmp / "receiver.log"
    cmd = [
        sys.executable, "-m", "magsag", "data", "serve", "--allow-writes",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    out = log.open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60.0, log)
    except BaseException:
        stop(proc)
        raise
    return Receiver(f"http://127.0.0.1:{port}", db, lake, token), (proc, out)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    rec, (proc, out) = start_receiver(tmp_path_factory.mktemp("receiver"), token="test-token-1", max_body=64 * 1024)
    try:
        yield rec
    finally:
        stop(proc)
        out.close()


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's own endpoint, headers or token."""
    for key in list(os.environ):
        if key.startswith(("MAGSAG_OTEL_", "OTEL_EXPORTER_OTLP_")) or key == "MAGSAG_SERVE_TOKEN":
            monkeypatch.delenv(key, raising=False)


@pytest.fixture
def fresh_receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver of its own (no token) for one test."""
    work = tmp_path / "receiver"
    work.mkdir(exist_ok=True)
    rec, (proc, out) = start_receiver(work)
    try:
        yield rec
    finally:
        stop(proc)
        out.close()
