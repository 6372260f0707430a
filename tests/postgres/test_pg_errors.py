"""Connection and permission errors: one clear line each, and never the DSN's password.

The shared test server trusts every local connection, so it cannot reject a password.
The wrong-password case runs against a private PostgreSQL cluster started for this
module (``initdb`` with scram-sha-256 on a free loopback port, stopped afterwards).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from magsag.backends.errors import BackendUnavailable, ConfigError, QueryError, StorageError
from magsag.backends.postgres.store import PostgresStorageBackend

pytestmark = pytest.mark.postgres

SECRET = "Pw-" + secrets.token_hex(8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_line_without_secret(exc: BaseException, caplog: pytest.LogCaptureFixture, *names: str) -> None:
    text = str(exc)
    assert text and "\n" not in text, text
    shown = "".join(traceback.format_exception(exc)) + repr(exc) + caplog.text
    assert SECRET not in shown
    for name in names:
        assert name in text, f"{name!r} not in {text!r}"


async def try_init(dsn: str, **kwargs) -> BaseException:
    backend = PostgresStorageBackend(dsn, connect_timeout=5, **kwargs)
    assert SECRET not in repr(backend)
    try:
        await backend.initialize()
    except StorageError as exc:
        return exc
    await backend.close()
    raise AssertionError("initialize() succeeded")


async def test_unreachable_server(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    exc = await try_init(f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/postgres")
    assert isinstance(exc, BackendUnavailable)
    assert_one_line_without_secret(exc, caplog, f"127.0.0.1:{port}", "connection refused")


async def test_unknown_host(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    exc = await try_init(f"postgresql://postgres:{SECRET}@no-such-host.invalid:5432/postgres")
    assert isinstance(exc, BackendUnavailable)
    assert_one_line_without_secret(exc, caplog, "no-such-host.invalid")


async def test_missing_database(pg_dsn, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    dsn = pg_dsn.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@").rsplit("/", 1)[0]
    exc = await try_init(f"{dsn}/magsag_no_such_db_{secrets.token_hex(3)}")
    assert isinstance(exc, ConfigError)
    assert_one_line_without_secret(exc, caplog, "magsag_no_such_db_", "does not exist")


@pytest.mark.parametrize(
    "dsn",
    [f"mysql://root:{SECRET}@localhost/db", f"postgresql://u:{SECRET}@host:notaport/db", "", "   "],
    ids=["mysql-scheme", "bad-port", "empty", "blank"],  # stable ids: xdist workers collect the same tests
)
async def test_invalid_dsn(dsn, caplog) -> None:
    with pytest.raises(ConfigError) as info:
        PostgresStorageBackend(dsn)
    assert_one_line_without_secret(info.value, caplog, "MAGSAG_STORAGE_DSN")


@pytest.fixture(scope="module")
def limited_role(pg_dsn, sql) -> Iterator[str]:
    """A login role with no right to create anything in the database."""
    role = f"magsag_noperm_{secrets.token_hex(3)}"
    sql(pg_dsn, f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
    yield role
    sql(pg_dsn, f"DROP OWNED BY {role}", f"DROP ROLE IF EXISTS {role}")


async def test_permission_denied(pg_dsn, limited_role, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    dsn = pg_dsn.replace("postgresql://postgres@", f"postgresql://{limited_role}:{SECRET}@")
    exc = await try_init(dsn, schema=f"t_noperm_{secrets.token_hex(3)}")
    assert isinstance(exc, ConfigError)
    assert_one_line_without_secret(exc, caplog, "permission denied", limited_role)


async def test_permission_denied_on_an_existing_store(pg_dsn, pg_schemas, limited_role, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    schema = pg_schemas.sub("owned")
    owner = PostgresStorageBackend(pg_dsn, schema=schema)
    await owner.initialize()
    await owner.close()
    dsn = pg_dsn.replace("postgresql://postgres@", f"postgresql://{limited_role}:{SECRET}@")
    exc = await try_init(dsn, schema=schema)
    assert isinstance(exc, ConfigError)
    assert_one_line_without_secret(exc, caplog, "permission denied")


async def test_statement_timeout_is_a_query_error(make_backend) -> None:
    backend = await make_backend(statement_timeout_ms=200)
    with pytest.raises(QueryError, match=r"statement timeout \(200 ms\)") as info:
        await backend.read(lambda c: c.execute("SELECT pg_sleep(2)"))
    assert "\n" not in str(info.value)


async def terminate(admin, pid: int) -> None:
    """End a server session and wait until its process is gone."""
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    for _ in range(500):
        if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} did not exit")


async def test_reads_survive_a_lost_connection(make_backend, admin) -> None:
    backend = await make_backend(pool_min=1, pool_max=1)
    await backend.append_event("run-1", "planner", "log", "2025-05-05T10:00:00Z", message="before")
    pid = await backend.read(lambda c: c.fetchval("SELECT pg_backend_pid()"))
    await terminate(admin, pid)
    run = await backend.get_run("run-1")  # the pooled connection is dead: retried on a new one
    assert run is not None and run["run_id"] == "run-1"
    assert pid != await backend.read(lambda c: c.fetchval("SELECT pg_backend_pid()"))
    assert [e["msg"] async for e in backend.get_events("run-1")] == ["before"]


# ------------------------------------------------------------- wrong password


def _pg_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def password_server(pg_dsn) -> Iterator[str]:
    """A private cluster that checks passwords; yields a DSN template with {password}."""
    bindir = _pg_bindir()
    if bindir is None:
        msg = "initdb not found: cannot start a cluster with password authentication"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="magsag-pgpw-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    pwfile = root / "pw"
    pwfile.write_text(SECRET + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres")
    data, port = root / "data", free_port()
    run = lambda *args: subprocess.run([*as_user, *map(str, args)], check=True, capture_output=True)  # noqa: E731
    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
            "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8")  # fmt: skip
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=20"
        run(bindir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "log", "-w", "-t", "60", "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"cannot start a private PostgreSQL cluster: {exc.stderr.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql://postgres:{{password}}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False,
                       capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


async def test_wrong_password(password_server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = password_server.format(password=SECRET + "x")
    exc = await try_init(wrong)
    assert isinstance(exc, ConfigError)
    assert_one_line_without_secret(exc, caplog, "rejected the password", "'postgres'")
    # the right password works against the same server, so the test above can fail
    right = PostgresStorageBackend(password_server.format(password=SECRET), schema="magsag_pw_ok")
    await right.initialize()
    try:
        await right.append_event("run-1", "planner", "log", "2025-05-05T10:00:00Z", message="ok")
        assert (await right.get_run("run-1"))["status"] == "running"
        assert SECRET not in repr(right) and SECRET not in str(await right.stats())
    finally:
        await right.close()


async def test_a_write_on_a_connection_the_server_closed_while_idle(make_backend, admin) -> None:
    backend = await make_backend(pool_min=1, pool_max=1)
    pid = await backend.read(lambda c: c.fetchval("SELECT pg_backend_pid()"))
    await terminate(admin, pid)
    # nothing was sent on the dead connection, so the write goes through on a new one
    await backend.append_event("run-idle", "planner", "log", "2025-05-05T10:00:00Z", message="after restart")
    assert [e["msg"] async for e in backend.get_events("run-idle")] == ["after restart"]
